"""Deletion: reclaim what garbage collection cannot (database, role, Redis user).

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
from kameng.kube import events
from kameng.kube.client import KubeError, path_for
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
    name = md["name"]
    try:
        # First: the site's HQ API token dies with the SubSite, whatever reclaim does.
        await sitecreds.revoke(rt.kube, rt.config.namespace, name)
    except KubeError as exc:
        raise kopf.TemporaryError(f"revoking the site's HQ credential failed: {exc}",
                                  delay=min(MAX_DELAY, 2.0 ** retry)) from None
    if (md.get("annotations") or {}).get(SKIP_RECLAIM_ANNOTATION) == "true":
        await events.post(rt.kube, body, "Warning", c.R_RECLAIM_SKIPPED,
                          f"{SKIP_RECLAIM_ANNOTATION} is set: database and Redis user of {name} "
                          "are left in place for manual clean-up")
        await _finish(rt, name)
        return
    policy = _policy(body)
    await _status(rt, body, c.R_RECLAIMING, f"reclaiming (database reclaimPolicy {policy})",
                  stalled=False)
    try:
        async with rt.site(name).backend_lock:  # after any in-flight provisioning
            await rt.postgres.reclaim(name, policy)  # type: ignore[arg-type]
            await rt.redis.remove(name)
        if policy == "Delete":  # the key copy goes with the data it decrypts
            await keyvault.drop(rt.kube, rt.config.namespace, name)
    except (DatabaseUnavailable, RedisUnavailable, KubeError) as exc:
        delay = min(MAX_DELAY, 2.0 ** retry)
        message = (f"{exc}; retrying in {delay:.0f}s. To release the SubSite without "
                   f"reclaiming, annotate it {SKIP_RECLAIM_ANNOTATION}=true")
        await _status(rt, body, c.R_RECLAIM_FAILED, message, stalled=True)
        if retry == 0 or retry % 10 == 0:
            await events.post(rt.kube, body, "Warning", c.R_RECLAIM_FAILED, message)
        raise kopf.TemporaryError(message, delay=delay) from None
    kept = "retained (role locked)" if policy == "Retain" else "dropped"
    await events.post(rt.kube, body, "Normal", c.R_RECLAIMED,
                      f"database of {name} {kept}; Redis user removed")
    await _finish(rt, name)


async def _finish(rt: Runtime, name: str) -> None:
    # Again at the end: a reconcile that was in flight when the deletion began may have
    # published the entry after the first revocation.
    try:
        await sitecreds.revoke(rt.kube, rt.config.namespace, name)
    except KubeError as exc:
        log.warning("SubSite %s: revoking the HQ credential failed (%s)", name, exc)
    # Garbage collection would remove the namespace too; deleting it now is faster and
    # does not depend on the owner reference having been set.
    try:
        await rt.kube.delete(path_for("v1", "Namespace", namespace_name(name)), kind="Namespace")
    except KubeError as exc:
        log.warning("SubSite %s: namespace deletion failed (%s); GC will retry", name, exc)
    rt.forget(name)
