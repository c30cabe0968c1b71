"""Deletion: reclaim what garbage collection cannot (database, role, Redis user).

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

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from kameng.api import conditions as c
from kameng.api.common import API_VERSION
from kameng.api.kinds import SKIP_RECLAIM_ANNOTATION
from kameng.api.resources import SUBSITE
from kameng.api.subsite import SubSiteSpec
from kameng.children.context import namespace_name
from kameng.children.namespace import namespace_ownership
from kameng.kube import events
from kameng.kube.client import KubeError, path_for
from kameng.provision.ownership import Claim
from kameng.provision.postgres import DatabaseUnavailable
from kameng.provision.redis_acl import RedisUnavailable

from . import keyvault, sitecreds, status
from .runtime import Runtime

log = logging.getLogger(__name__)
MAX_DELAY = 30.0


def _policy(body: dict[str, Any]) -> str:
    try:
        return SubSiteSpec.model_validate(body.get("spec") or {}).database.reclaim_policy
    except ValueError:
        return "Retain"  # when in doubt, keep the data


async def _status(rt: Runtime, body: dict[str, Any], reason: str, message: str,
                  stalled: bool) -> None:
    name = body["metadata"]["name"]
    current = body.get("status") or {}
    new = status.terminating(current, reason, message, stalled,
                             int(body["metadata"].get("generation", 1)), datetime.now(UTC))
    if {k: current.get(k) for k in new} == new:
        return
    try:
        await rt.kube.merge_patch(path_for(API_VERSION, SUBSITE.kind, name,
                                           subresource="status"), {"status": new},
                                  kind=SUBSITE.kind)
    except KubeError as exc:
        log.warning("SubSite %s: could not write terminating status: %s", name, exc)


async def reclaim(rt: Runtime, body: dict[str, Any], retry: int) -> None:
    md = body["metadata"]
    name, uid = md["name"], md.get("uid", "")
    rt.reclaimed.add(uid)
    site = rt.site(name)
    async with site.reconcile_lock:  # the reconcile in flight finishes first
        pass
    try:
        # Then: the site's HQ API token dies with the SubSite, whatever reclaim does.
        await sitecreds.revoke(rt.kube, rt.config.namespace, name)
    except KubeError as exc:
        raise kopf.TemporaryError(f"revoking the site's HQ credential failed: {exc}",
                                  delay=min(MAX_DELAY, 2.0 ** retry)) from None
    if (md.get("annotations") or {}).get(SKIP_RECLAIM_ANNOTATION) == "true":
        await events.post(rt.kube, body, "Warning", c.R_RECLAIM_SKIPPED,
                          f"{SKIP_RECLAIM_ANNOTATION} is set: database and Redis user of {name} "
                          "are left in place for manual clean-up")
        await _finish(rt, name, uid)
        return
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


async def _finish(rt: Runtime, name: str, uid: str) -> None:
    # Again at the end: a reconcile that was in flight when the deletion began may have
    # published the entry after the first revocation.
    try:
        await sitecreds.revoke(rt.kube, rt.config.namespace, name)
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
