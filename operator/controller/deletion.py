"""Deletion: first the exit (export the site's data for HQ), then reclaim what garbage
collection cannot (database, role, Redis user), then the License is Terminated.

Export before anything is removed: status Exporting → Exported (archive location and
SHA-256 in ``status.export``) → Terminating (reclaim per ``reclaimPolicy``) → namespace
removed → License ``Terminated`` (condition, annotation, Event). A failed export (store or
PostgreSQL away) removes nothing: status and Events say why, it is retried with backoff,
and ``kameng.io/waive-export: "true"`` is the documented way out for data that may go
without an archive (a Warning Event records who chose it: the annotation is audited).

Ordered against the reconcile: the SubSite is first marked reclaimed (no reconcile
does anything for it any more, see :func:`reconcile.reconcile`), then the reclaim waits
for the reconcile in flight, so nothing it removes is created again afterwards. Only
what carries this SubSite's mark (namespace label, PostgreSQL comment, Redis owner
record, key-copy label) is removed; anything else of the same name is left and named
in an Event.

Never stuck silently: a failure is written to status and posted as an Event, retried
with backoff, and a person can release the SubSite with the annotation
``kameng.io/skip-reclaim: "true"`` (the database and Redis user are then left as they
are, for manual clean-up).
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from kameng.api import conditions as c
from kameng.api.common import API_VERSION
from kameng.api.kinds import (
    SKIP_RECLAIM_ANNOTATION,
    TERMINATED_AT_ANNOTATION,
    WAIVE_EXPORT_ANNOTATION,
)
from kameng.api.resources import LICENSE, SUBSITE
from kameng.api.subsite import SubSiteSpec
from kameng.children.context import namespace_name
from kameng.children.namespace import namespace_ownership
from kameng.contracts import pod
from kameng.exit.envelope import EnvelopeError
from kameng.exit.export import ExportFailed
from kameng.exit.runner import database_owner, load_store, run_export
from kameng.exit.store import StoreUnavailable
from kameng.kube import events
from kameng.kube.client import KubeError, path_for
from kameng.provision.ownership import Claim
from kameng.provision.postgres import DatabaseUnavailable
from kameng.provision.redis_acl import RedisUnavailable

from . import keyvault, status
from .runtime import Runtime

log = logging.getLogger(__name__)
MAX_DELAY = 30.0
MAX_EXPORT_DELAY = 120.0  # 5, 10, 20, 40, 80, 120 s…: a store outage is often minutes


def _policy(body: dict[str, Any]) -> str:
    try:
        return SubSiteSpec.model_validate(body.get("spec") or {}).database.reclaim_policy
    except ValueError:
        return "Retain"  # when in doubt, keep the data


async def _status(rt: Runtime, body: dict[str, Any], reason: str, message: str,
                  stalled: bool, **extra: Any) -> None:
    name = body["metadata"]["name"]
    current = body.get("status") or {}
    new = status.terminating(current, reason, message, stalled,
                             int(body["metadata"].get("generation", 1)), datetime.now(UTC),
                             **extra)
    if {k: current.get(k) for k in new} == new:
        return
    try:
        await rt.kube.merge_patch(path_for(API_VERSION, SUBSITE.kind, name,
                                           subresource="status"), {"status": new},
                                  kind=SUBSITE.kind)
        # The next step of this same deletion reads what was written.
        body["status"] = {**current, **new}
    except KubeError as exc:
        log.warning("SubSite %s: could not write terminating status: %s", name, exc)


async def _data_keys(rt: Runtime, name: str) -> str:
    """The site's key ring, which decrypts its delivered keys: the operator's copy, else
    the site's own Secret; '' when the site never had one (then nothing is encrypted)."""
    saved = await keyvault.load(rt.kube, rt.config.namespace, name)
    if saved is not None:
        return saved.data_key
    obj = await rt.kube.get(path_for("v1", "Secret", pod.DATA_KEYS.secret,
                                     namespace_name(name)), kind="Secret")
    raw = ((obj or {}).get("data") or {}).get(pod.DATA_KEYS.key)
    return base64.b64decode(raw).decode() if raw else ""


async def _close_shop(rt: Runtime, name: str) -> None:
    """Scale the shop to zero before the snapshot: an order taken after it would be in
    no archive. (No reconcile acts on a SubSite being deleted, so nothing scales it up.)"""
    path = path_for("apps/v1", "Deployment", "storefront", namespace_name(name))
    try:
        dep = await rt.kube.get(path, kind="Deployment")
        if dep is not None and (dep.get("spec") or {}).get("replicas") != 0:
            await rt.kube.merge_patch(path, {"spec": {"replicas": 0}}, kind="Deployment")
    except KubeError as exc:
        log.warning("SubSite %s: could not stop the shop before the export (%s)", name, exc)


async def export(rt: Runtime, body: dict[str, Any], retry: int) -> None:
    """Step 1 of the deletion: the exit archive. Returns when it exists (or was waived,
    or there is no data of this SubSite's); raises kopf.TemporaryError otherwise."""
    md = body["metadata"]
    name, uid = md["name"], md.get("uid", "")
    if (body.get("status") or {}).get("export"):
        return  # made by an earlier attempt of this deletion
    if (md.get("annotations") or {}).get(WAIVE_EXPORT_ANNOTATION) == "true":
        msg = (f"{WAIVE_EXPORT_ANNOTATION}=true is set: the data of {name} is reclaimed per "
               "reclaimPolicy WITHOUT an exit archive")
        if (condition := status.condition(body.get("status"), c.EXPORTED)) is None or \
                condition.get("reason") != c.R_EXPORT_WAIVED:
            await events.post(rt.kube, body, "Warning", c.R_EXPORT_WAIVED, msg)
        await _status(rt, body, c.R_EXPORT_WAIVED, msg, stalled=False,
                      exported=(False, c.R_EXPORT_WAIVED, msg))
        return
    delay = min(MAX_EXPORT_DELAY, 5.0 * 2 ** min(retry, 6))
    way_out = (f"retrying in {delay:.0f}s; nothing is deleted until the archive exists. "
               f"To delete without an archive, annotate the SubSite {WAIVE_EXPORT_ANNOTATION}"
               f"=true; to release it leaving all data in place, {SKIP_RECLAIM_ANNOTATION}"
               "=true")
    try:
        owner, marked = await database_owner(rt.config.pg_admin_dsn, name)
        if owner == "absent" or (owner == "marked" and marked != uid):
            why = "none exists" if owner == "absent" else \
                "the database of that name belongs to another SubSite"
            msg = f"no database of this SubSite to export ({why})"
            await events.post(rt.kube, body, "Normal", c.R_NOTHING_TO_EXPORT, msg)
            await _status(rt, body, c.R_NOTHING_TO_EXPORT, msg, stalled=False,
                          exported=(False, c.R_NOTHING_TO_EXPORT, msg))
            return
        await _close_shop(rt, name)
        await _status(rt, body, c.R_EXPORTING, "exporting the site's data for HQ",
                      stalled=False, phase=c.PHASE_EXPORTING,
                      exported=(False, c.R_EXPORTING, "exporting the site's data for HQ"))
        store = await load_store(rt.kube, rt.config.namespace, rt.config.export_store_secret,
                                 rt.config.export_dir)
        result = await run_export(
            rt.kube, namespace=rt.config.namespace, body=body,
            admin_dsn=rt.config.pg_admin_dsn, hq_dsn=rt.config.hq_database_url or None,
            store=store, data_keys=await _data_keys(rt, name), signing_key=rt.keys.signing_key,
            reason="termination", workdir=rt.config.export_workdir)
    except (ExportFailed, StoreUnavailable, EnvelopeError, KubeError, OSError) as exc:
        message = f"export failed: {exc}; {way_out}"[:c.MAX_MESSAGE]
        await _status(rt, body, c.R_EXPORT_FAILED, message, stalled=True,
                      phase=c.PHASE_EXPORTING, exported=(False, c.R_EXPORT_FAILED, message))
        if retry == 0 or retry % 10 == 0:
            await events.post(rt.kube, body, "Warning", c.R_EXPORT_FAILED, message)
        raise kopf.TemporaryError(message, delay=delay) from None
    done = (f"archive {result.location} (SHA-256 {result.sha256}, {result.size} bytes, "
            f"{sum(result.rows.values())} rows) in {result.seconds:.1f}s")
    await _status(rt, body, c.R_EXPORTED, done, stalled=False, phase=c.PHASE_EXPORTED,
                  exported=(True, c.R_EXPORTED, done),
                  export={"location": result.location, "sha256": result.sha256,
                          "size": result.size, "seconds": round(result.seconds, 3),
                          "finishedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    await events.post(rt.kube, body, "Normal", c.R_EXPORTED, done)


async def reclaim(rt: Runtime, body: dict[str, Any], retry: int) -> None:
    md = body["metadata"]
    name, uid = md["name"], md.get("uid", "")
    rt.reclaimed.add(uid)
    site = rt.site(name)
    async with site.reconcile_lock:  # the reconcile in flight finishes first
        pass
    try:
        # Then: the site's HQ API token dies with the SubSite, whatever reclaim does.
        await rt.registry.revoke(name)
    except KubeError as exc:
        raise kopf.TemporaryError(f"revoking the site's HQ credential failed: {exc}",
                                  delay=min(MAX_DELAY, 2.0 ** retry)) from None
    if (md.get("annotations") or {}).get(SKIP_RECLAIM_ANNOTATION) == "true":
        await events.post(rt.kube, body, "Warning", c.R_RECLAIM_SKIPPED,
                          f"{SKIP_RECLAIM_ANNOTATION} is set: database and Redis user of {name} "
                          "are left in place for manual clean-up")
        await _finish(rt, name, uid)
        return
    await export(rt, body, retry)
    policy = _policy(body)
    await _status(rt, body, c.R_RECLAIMING, f"reclaiming (database reclaimPolicy {policy})",
                  stalled=False)
    left: list[str] = []
    try:
        live_ns = await rt.kube.get(path_for("v1", "Namespace", namespace_name(name)),
                                    kind="Namespace")
        claim = Claim(uid=uid, adopt_unmarked=namespace_ownership(live_ns, uid) == "legacy")
        async with site.backend_lock:  # after any in-flight provisioning
            left += await rt.postgres.reclaim(name, claim, policy)  # type: ignore[arg-type]
            redis_left = await rt.redis.remove(name, claim)
            if redis_left:
                left.append(redis_left)
        if policy == "Delete":  # the key copy goes with the data it decrypts
            saved = await keyvault.load(rt.kube, rt.config.namespace, name)
            if saved is not None and (saved.owner == uid or (
                    saved.owner is None and claim.adopt_unmarked)):
                await keyvault.drop(rt.kube, rt.config.namespace, name)
    except (DatabaseUnavailable, RedisUnavailable, KubeError) as exc:
        delay = min(MAX_DELAY, 2.0 ** retry)
        message = (f"{exc}; retrying in {delay:.0f}s. To release the SubSite without "
                   f"reclaiming, annotate it {SKIP_RECLAIM_ANNOTATION}=true")
        await _status(rt, body, c.R_RECLAIM_FAILED, message, stalled=True)
        if retry == 0 or retry % 10 == 0:
            await events.post(rt.kube, body, "Warning", c.R_RECLAIM_FAILED, message)
        raise kopf.TemporaryError(message, delay=delay) from None
    for note in left:
        await events.post(rt.kube, body, "Warning", c.R_NAME_CONFLICT, note)
    kept = "retained (role locked)" if policy == "Retain" else "dropped"
    await events.post(rt.kube, body, "Normal", c.R_RECLAIMED,
                      f"database of {name} {kept}; Redis user removed")
    await _finish(rt, name, uid)
    await _terminate_license(rt, body)


async def _terminate_license(rt: Runtime, body: dict[str, Any]) -> None:
    """The License of a site that was exported and reclaimed ends: annotation (an input
    the life cycle can read), Terminated condition, one Event. A License that names
    another site is left alone."""
    name = body["metadata"]["name"]
    lic_name = str((body.get("spec") or {}).get("licenseRef", ""))
    if not lic_name:
        return
    path = path_for(API_VERSION, LICENSE.kind, lic_name)
    try:
        lic = await rt.kube.get(path, kind=LICENSE.kind)
        if lic is None or (lic.get("spec") or {}).get("subSite") != name:
            return
        if (lic["metadata"].get("annotations") or {}).get(TERMINATED_AT_ANNOTATION):
            return
        now = datetime.now(UTC)
        exp = (body.get("status") or {}).get("export") or {}
        msg = (f"SubSite {name} was deleted: data exported to {exp['location']} "
               f"(SHA-256 {exp['sha256']}) and reclaimed" if exp else
               f"SubSite {name} was deleted and reclaimed (no exit archive)")
        await rt.kube.merge_patch(path, {"metadata": {"annotations": {
            TERMINATED_AT_ANNOTATION: now.strftime("%Y-%m-%dT%H:%M:%SZ")}}}, kind=LICENSE.kind)
        conds = c.set_condition((lic.get("status") or {}).get("conditions"), c.TERMINATED,
                                True, c.R_TERMINATED, msg, now,
                                int(lic["metadata"].get("generation", 1)))
        await rt.kube.merge_patch(path_for(API_VERSION, LICENSE.kind, lic_name,
                                           subresource="status"),
                                  {"status": {"conditions": conds}}, kind=LICENSE.kind)
        await events.post(rt.kube, lic, "Normal", c.R_TERMINATED, msg)
    except KubeError as exc:
        log.warning("License %s: could not mark it terminated (%s)", lic_name, exc)


async def _finish(rt: Runtime, name: str, uid: str) -> None:
    # Again at the end: a reconcile that was in flight when the deletion began may have
    # published the entry after the first revocation.
    try:
        await rt.registry.revoke(name)
    except KubeError as exc:
        log.warning("SubSite %s: revoking the HQ credential failed (%s)", name, exc)
    # Garbage collection would remove our namespace too; deleting it now is faster and
    # does not depend on the owner reference having been set. A namespace of that name
    # that is not this SubSite's is never deleted.
    path = path_for("v1", "Namespace", namespace_name(name))
    try:
        live = await rt.kube.get(path, kind="Namespace")
        if namespace_ownership(live, uid) in ("ours", "legacy"):
            await rt.kube.delete(path, kind="Namespace")
    except KubeError as exc:
        log.warning("SubSite %s: namespace deletion failed (%s); GC will retry", name, exc)
    rt.forget(name)
