"""SubSite status: phase and kstatus conditions, computed purely from observations.

Conditions keep their ``lastTransitionTime`` while their status stays the same, so an
unchanged situation yields a byte-identical status and no write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kameng.api.subsite import SubSiteStatus

from .licensing import LicenseVerdict, rfc3339

CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "LicenseValid", "DatabaseReady",
                   "StorefrontAvailable")


@dataclass(frozen=True)
class Observation:
    generation: int
    namespace: str
    url: str
    license: LicenseVerdict
    database_ready: bool
    database_message: str
    deployment: dict[str, Any] | None
    desired_replicas: int
    problem: str | None = None  # needs a person: bad reference, unknown role…
    problem_reason: str = "InvalidSpec"
    transient_error: str | None = None  # will be retried: server unreachable…
    now: datetime = field(default_factory=datetime.now)


def deployment_available(dep: dict[str, Any] | None, replicas: int) -> tuple[bool, str, int]:
    """(available and fully rolled out, message, ready replicas)."""
    if dep is None:
        return False, "Deployment storefront does not exist yet", 0
    st = dep.get("status", {})
    ready = int(st.get("readyReplicas", 0) or 0)
    if int(st.get("observedGeneration", 0) or 0) < int(dep["metadata"].get("generation", 1)):
        return False, "Deployment storefront is being updated", ready
    updated = int(st.get("updatedReplicas", 0) or 0)
    available = int(st.get("availableReplicas", 0) or 0)
    total = int(st.get("replicas", 0) or 0)
    if updated < replicas or total > updated:
        return False, f"Rolling out: {updated}/{replicas} updated", ready
    if available < replicas:
        return False, f"{available}/{replicas} storefront pods available", ready
    return True, f"{available}/{replicas} storefront pods available", ready


def _cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message[:2000]}


def compute(obs: Observation, previous: dict[str, Any] | None) -> dict[str, Any]:
    lic = obs.license
    avail, avail_msg, ready_replicas = deployment_available(obs.deployment,
                                                            obs.desired_replicas)
    stalled = obs.problem is not None or (not lic.valid and lic.reason in (
        "LicenseNotFound", "LicenseForOtherSite"))
    ready = lic.valid and obs.database_ready and avail and obs.problem is None \
        and obs.transient_error is None
    if ready:
        ready_reason, ready_msg = "Ready", f"Storefront serves {obs.url}"
    elif obs.problem:
        ready_reason, ready_msg = obs.problem_reason, obs.problem
    elif not lic.valid:
        ready_reason, ready_msg = lic.reason, lic.message
    elif obs.transient_error:
        ready_reason, ready_msg = "ReconcileError", obs.transient_error
    elif not obs.database_ready:
        ready_reason, ready_msg = "DatabaseNotReady", obs.database_message
    else:
        ready_reason, ready_msg = "StorefrontNotAvailable", avail_msg

    if lic.state == "Suspended":
        phase = "Suspended"
    elif lic.state == "Expired":
        phase = "Expired"
    elif ready:
        phase = "Ready"
    elif obs.problem:
        phase = "Failed"
    elif not lic.valid and lic.state is None:
        phase = "Pending"
    else:
        phase = "Provisioning"
    # Reconciling means "work in progress that will finish by itself"; a site waiting
    # on a person (Stalled) or deliberately off (Suspended/Expired) is not reconciling.
    reconciling = not ready and not stalled and phase == "Provisioning"

    conditions = [
        _cond("Ready", ready, ready_reason, ready_msg),
        _cond("Reconciling", reconciling, "Progressing" if reconciling else "Settled",
              ready_msg if reconciling else ""),
        _cond("Stalled", stalled, ready_reason if stalled else "NotStalled",
              ready_msg if stalled else ""),
        _cond("LicenseValid", lic.valid, lic.reason, lic.message),
        _cond("DatabaseReady", obs.database_ready,
              "Provisioned" if obs.database_ready else "NotProvisioned",
              obs.database_message),
        _cond("StorefrontAvailable", avail, "Available" if avail else "NotAvailable",
              avail_msg),
    ]
    prev_conds = {c.get("type"): c for c in (previous or {}).get("conditions", [])}
    stamp = rfc3339(obs.now)
    for c in conditions:
        old = prev_conds.get(c["type"])
        c["lastTransitionTime"] = old.get("lastTransitionTime", stamp) \
            if old and old.get("status") == c["status"] else stamp
        c["observedGeneration"] = obs.generation

    status = SubSiteStatus.model_validate({
        "phase": phase,
        "namespace": obs.namespace,
        "url": obs.url,
        "licenseState": lic.state,
        "licenseExpiresAt": lic.expires_at,
        "readyReplicas": ready_replicas,
        "observedGeneration": obs.generation,
        "conditions": conditions,
    })
    return status.to_wire()


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions", []):
        if c.get("type") == type_:
            return c
    return None


def transitions(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Events worth posting: (type, reason, message) for a changed phase or a changed
    Ready/LicenseValid/DatabaseReady status. Nothing when nothing changed."""
    out: list[tuple[str, str, str]] = []
    if (old or {}).get("phase") != new.get("phase"):
        ready = condition(new, "Ready") or {}
        bad = new.get("phase") in ("Failed", "Expired", "Suspended")
        out.append(("Warning" if bad else "Normal", f"Phase{new.get('phase')}",
                    f"Phase is now {new.get('phase')}: {ready.get('message', '')}"))
    for t in ("LicenseValid", "DatabaseReady"):
        a, b = condition(old, t), condition(new, t)
        if b and (a is None or a.get("status") != b.get("status")) and b["status"] == "False":
            out.append(("Warning", b["reason"], b["message"]))
    return out
