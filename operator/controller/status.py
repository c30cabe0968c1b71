"""SubSite status: phase and kstatus conditions, computed purely from observations —
while it lives (:func:`compute`) and while it is being deleted (:func:`terminating`).

Conditions keep their ``lastTransitionTime`` while their status stays the same
(:func:`kameng.api.conditions.set_condition`), so an unchanged situation yields a
byte-identical status and no write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kameng.api import conditions as c
from kameng.api.license import EXPIRED, SUSPENDED
from kameng.api.subsite import SubSiteStatus
from kameng.licensing.verdict import LicenseVerdict


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
    problem_reason: str = c.R_INVALID_SPEC
    transient_error: str | None = None  # will be retried: server unreachable…
    now: datetime = field(default_factory=datetime.now)
    # The SubSite's spec and its kameng.io/approved-change annotation: a change of an
    # approvable field is recorded in status (see :func:`record_changes`).
    spec: dict[str, Any] | None = None
    approved_change: str = ""
    database_server: str | None = None  # the PostgreSQL server the site is placed on


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


def compute(obs: Observation, previous: dict[str, Any] | None) -> dict[str, Any]:
    lic = obs.license
    avail, avail_msg, ready_replicas = deployment_available(obs.deployment,
                                                            obs.desired_replicas)
    stalled = obs.problem is not None or (not lic.valid and lic.reason in (
        c.R_LICENSE_NOT_FOUND, c.R_LICENSE_FOR_OTHER_SITE))
    ready = lic.valid and obs.database_ready and avail and obs.problem is None \
        and obs.transient_error is None
    if ready:
        ready_reason, ready_msg = c.R_READY, f"Storefront serves {obs.url}"
    elif obs.problem:
        ready_reason, ready_msg = obs.problem_reason, obs.problem
    elif not lic.valid:
        ready_reason, ready_msg = lic.reason, lic.message
    elif obs.transient_error:
        ready_reason, ready_msg = c.R_RECONCILE_ERROR, obs.transient_error
    elif not obs.database_ready:
        ready_reason, ready_msg = c.R_DATABASE_NOT_READY, obs.database_message
    else:
        ready_reason, ready_msg = c.R_STOREFRONT_NOT_AVAILABLE, avail_msg

    if lic.state == SUSPENDED:
        phase = c.PHASE_SUSPENDED
    elif lic.state == EXPIRED:
        phase = c.PHASE_EXPIRED
    elif ready:
        phase = c.PHASE_READY
    elif obs.problem:
        phase = c.PHASE_FAILED
    elif not lic.valid and lic.state is None:
        phase = c.PHASE_PENDING
    else:
        phase = c.PHASE_PROVISIONING
    # Reconciling means "work in progress that will finish by itself"; a site waiting
    # on a person (Stalled) or deliberately off (Suspended/Expired) is not reconciling.
    reconciling = not ready and not stalled and phase == c.PHASE_PROVISIONING

    conds = (previous or {}).get("conditions")
    for type_, ok, reason, message in (
        (c.READY, ready, ready_reason, ready_msg),
        (c.RECONCILING, reconciling, c.R_PROGRESSING if reconciling else c.R_SETTLED,
         ready_msg if reconciling else ""),
        (c.STALLED, stalled, ready_reason if stalled else c.R_NOT_STALLED,
         ready_msg if stalled else ""),
        (c.LICENSE_VALID, lic.valid, lic.reason, lic.message),
        (c.DATABASE_READY, obs.database_ready,
         c.R_PROVISIONED if obs.database_ready else c.R_NOT_PROVISIONED,
         obs.database_message),
        (c.STOREFRONT_AVAILABLE, avail, c.R_AVAILABLE if avail else c.R_NOT_AVAILABLE,
         avail_msg),
    ):
        conds = c.set_condition(conds, type_, ok, reason, message, obs.now, obs.generation)

    status = SubSiteStatus.model_validate({
        "phase": phase,
        "namespace": obs.namespace,
        "url": obs.url,
        "licenseState": lic.state,
        "licenseExpiresAt": lic.expires_at,
        "readyReplicas": ready_replicas,
        "observedGeneration": obs.generation,
        # The record of where the data is: kept when this reconcile could not tell.
        "databaseServer": obs.database_server or (previous or {}).get("databaseServer"),
        "conditions": conds,
        **record_changes(previous, obs.spec, obs.approved_change, obs.now),
    })
    return status.to_wire()


# The SubSite fields a back office may only change through HQ (camelCase paths in spec);
# RolePolicy.spec.approvals says which of them wait for a person.
APPROVABLE_FIELDS: tuple[str, ...] = (
    "payments.methods", "domain", "catalog.priceRules", "catalog.hiddenProducts", "members")
HISTORY_LENGTH = 10


def fingerprints(spec: dict[str, Any]) -> list[str]:
    """``field=hash`` of each approvable field (hash of its canonical JSON)."""
    out = []
    for path in APPROVABLE_FIELDS:
        value: Any = spec
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        out.append(f"{path}={digest}")
    return out


def record_changes(previous: dict[str, Any] | None, spec: dict[str, Any] | None,
                   approved_change: str, now: datetime) -> dict[str, Any]:
    """The status fields that remember approvable fields: their fingerprints, the last
    approval annotation seen, and a short history of changes — ``approval`` when the
    annotation names a new HQ request (HQ writes both in one patch), ``yaml`` otherwise.
    The first observation only records the baseline."""
    prev = previous or {}
    history = list(prev.get("changeHistory") or [])
    if spec is None:
        return {k: prev.get(k) for k in ("approvableFingerprints", "lastApprovedChange",
                                          "changeHistory") if prev.get(k) is not None}
    new = fingerprints(spec)
    old = prev.get("approvableFingerprints")
    last_request = prev.get("lastApprovedChange") or ""
    if old:
        changed = [n.split("=")[0] for n in new if n not in old]
        if changed:
            from_approval = bool(approved_change) and approved_change != last_request
            record = {"at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "fields": changed, "source": "approval" if from_approval else "yaml"}
            if from_approval:
                record["request"] = approved_change
            history = [*history, record][-HISTORY_LENGTH:]
    out: dict[str, Any] = {"approvableFingerprints": new}
    if approved_change:
        out["lastApprovedChange"] = approved_change
    if history:
        out["changeHistory"] = history
    return out


def change_events(old: dict[str, Any] | None, new: dict[str, Any],
                  approvals: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(type, reason, message) for a change record ``new`` adds: Normal for an approved
    change, Warning for a YAML edit of a field the RolePolicy puts behind approval."""
    before = (old or {}).get("changeHistory") or []
    after = new.get("changeHistory") or []
    if not after or (before and before[-1] == after[-1]):
        return []
    rec = after[-1]
    fields = ", ".join(rec["fields"])
    if rec["source"] == "approval":
        return [("Normal", c.R_APPROVED_CHANGE,
                 f"{fields} changed by HQ approval {rec.get('request', '')}")]
    listed = [f for f in rec["fields"] if f in approvals]
    if listed:
        return [("Warning", c.R_CHANGED_OUTSIDE_APPROVAL,
                 f"{', '.join(listed)} changed in the SubSite directly, not through an HQ "
                 "approval (recorded in status.changeHistory)")]
    return [("Normal", c.R_CHANGED_OUTSIDE_APPROVAL, f"{fields} changed in the SubSite")]


def terminating(previous: dict[str, Any] | None, reason: str, message: str, stalled: bool,
                generation: int, now: datetime, *, phase: str = c.PHASE_TERMINATING,
                exported: tuple[bool, str, str] | None = None,
                export: dict[str, Any] | None = None) -> dict[str, Any]:
    """Status of a SubSite being deleted: ``phase`` (Exporting, Exported, Terminating),
    with Ready/Reconciling/Stalled saying what the exit is doing, ``exported`` =
    (status, reason, message) of the Exported condition and ``export`` the archive's
    location and checksum once made; its other conditions are kept as they were."""
    conds = (previous or {}).get("conditions")
    for type_, ok, msg in ((c.READY, False, message),
                           (c.RECONCILING, not stalled, message),
                           (c.STALLED, stalled, message if stalled else "")):
        conds = c.set_condition(conds, type_, ok, reason, msg, now, generation)
    if exported is not None:
        conds = c.set_condition(conds, c.EXPORTED, exported[0], exported[1], exported[2], now,
                                generation)
    out: dict[str, Any] = {"phase": phase, "conditions": conds}
    if export is not None:
        out["export"] = export
    return out


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return c.find((status or {}).get("conditions"), type_)


def transitions(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Events worth posting: (type, reason, message) for a changed phase or a changed
    Ready/LicenseValid/DatabaseReady status. Nothing when nothing changed."""
    out: list[tuple[str, str, str]] = []
    first = not (old or {}).get("phase")
    # A new SubSite's first phase is not a transition: its status says it, and an Event
    # per new site (Provisioning) was one write in eight of a batch's. A site that starts
    # in a bad phase (Failed, Suspended, Expired) still says so.
    if first and new.get("phase") in (c.PHASE_PROVISIONING, c.PHASE_PENDING):
        pass
    elif (old or {}).get("phase") != new.get("phase"):
        ready = condition(new, c.READY) or {}
        bad = new.get("phase") in c.BAD_PHASES
        out.append(("Warning" if bad else "Normal", f"Phase{new.get('phase')}",
                    f"Phase is now {new.get('phase')}: {ready.get('message', '')}"))
    for t in (c.LICENSE_VALID, c.DATABASE_READY):
        a, b = condition(old, t), condition(new, t)
        if b and (a is None or a.get("status") != b.get("status")) and b["status"] == "False":
            out.append(("Warning", b["reason"], b["message"]))
    return out
