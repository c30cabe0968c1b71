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

from kameng.api.subsite import SubSiteSpec
from kameng.children.context import namespace_name
from kameng.provision.postgres import DatabaseUnavailable
from kameng.provision.redis_acl import RedisUnavailable

from . import events, keyvault
from .kube import KubeError, path_for
from .licensing import rfc3339
from .runtime import Runtime

log = logging.getLogger(__name__)
SKIP_ANNOTATION = "kameng.io/skip-reclaim"
MAX_DELAY = 30.0


def _policy(body: dict[str, Any]) -> str:
    try:
        return SubSiteSpec.model_validate(body.get("spec") or {}).database.reclaim_policy
    except ValueError:
        return "Retain"  # when in doubt, keep the data


async def _status(rt: Runtime, body: dict[str, Any], reason: str, message: str,
                  stalled: bool) -> None:
    name = body["metadata"]["name"]
    now = rfc3339(datetime.now(UTC))
    gen = int(body["metadata"].get("generation", 1))
    conds = [
        {"type": "Ready", "status": "False", "reason": reason, "message": message,
         "lastTransitionTime": now, "observedGeneration": gen},
        {"type": "Reconciling", "status": "False" if stalled else "True", "reason": reason,
         "message": message, "lastTransitionTime": now, "observedGeneration": gen},
        {"type": "Stalled", "status": "True" if stalled else "False", "reason": reason,
         "message": message if stalled else "", "lastTransitionTime": now,
         "observedGeneration": gen},
    ]
    old = {c.get("type"): c for c in (body.get("status") or {}).get("conditions", [])}
    for c in conds:
        o = old.get(c["type"])
        if o and o.get("status") == c["status"] and o.get("reason") == c["reason"]:
            c["lastTransitionTime"] = o.get("lastTransitionTime", now)
    keep = [c for t, c in old.items() if t not in {"Ready", "Reconciling", "Stalled"}]
    new = {"phase": "Terminating", "conditions": conds + keep}
    cur = body.get("status") or {}
    if cur.get("phase") == "Terminating" and all(
            (old.get(c["type"]) or {}).get(k) == c[k]
            for c in conds for k in ("status", "reason", "message")):
        return
    try:
        await rt.kube.merge_patch(path_for("kameng.io/v1alpha1", "SubSite", name,
                                           subresource="status"), {"status": new},
                                  kind="SubSite")
    except KubeError as exc:
        log.warning("SubSite %s: could not write terminating status: %s", name, exc)


async def reclaim(rt: Runtime, body: dict[str, Any], retry: int) -> None:
    md = body["metadata"]
    name = md["name"]
    if (md.get("annotations") or {}).get(SKIP_ANNOTATION) == "true":
        await events.post(rt.kube, body, "Warning", "ReclaimSkipped",
                          f"{SKIP_ANNOTATION} is set: database and Redis user of {name} are "
                          "left in place for manual clean-up")
        await _finish(rt, name)
        return
    policy = _policy(body)
    await _status(rt, body, "Reclaiming", f"reclaiming (database reclaimPolicy {policy})",
                  stalled=False)
    try:
        async with rt.backend_lock(name):  # after any in-flight provisioning
            await rt.postgres.reclaim(name, policy)  # type: ignore[arg-type]
            await rt.redis.remove(name)
        if policy == "Delete":  # the key copy goes with the data it decrypts
            await keyvault.drop(rt.kube, rt.config.namespace, name)
    except (DatabaseUnavailable, RedisUnavailable, KubeError) as exc:
        delay = min(MAX_DELAY, 2.0 ** retry)
        message = (f"{exc}; retrying in {delay:.0f}s. To release the SubSite without "
                   f"reclaiming, annotate it {SKIP_ANNOTATION}=true")
        await _status(rt, body, "ReclaimFailed", message, stalled=True)
        if retry == 0 or retry % 10 == 0:
            await events.post(rt.kube, body, "Warning", "ReclaimFailed", message)
        raise kopf.TemporaryError(message, delay=delay) from None
    kept = "retained (role locked)" if policy == "Retain" else "dropped"
    await events.post(rt.kube, body, "Normal", "Reclaimed",
                      f"database of {name} {kept}; Redis user removed")
    await _finish(rt, name)


async def _finish(rt: Runtime, name: str) -> None:
    # Garbage collection would remove the namespace too; deleting it now is faster and
    # does not depend on the owner reference having been set.
    try:
        await rt.kube.delete(path_for("v1", "Namespace", namespace_name(name)), kind="Namespace")
    except KubeError as exc:
        log.warning("SubSite %s: namespace deletion failed (%s); GC will retry", name, exc)
    rt.forget(name)
