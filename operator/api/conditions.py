"""Condition types, reasons and phases of the kameng.io kinds, and the one rule that
merges a condition into a status (apimachinery's ``meta.SetStatusCondition``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .common import format_time

# Condition types (kstatus: Ready, Reconciling, Stalled; then kind-specific ones).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
LICENSE_VALID = "LicenseValid"
DATABASE_READY = "DatabaseReady"
STOREFRONT_AVAILABLE = "StorefrontAvailable"
EXPORTED = "Exported"  # SubSite being deleted: its data handed over (the exit archive)
TERMINATED = "Terminated"  # License: its site was exported and reclaimed

# SubSite phases.
PHASE_PENDING = "Pending"
PHASE_PROVISIONING = "Provisioning"
PHASE_READY = "Ready"
PHASE_SUSPENDED = "Suspended"
PHASE_EXPIRED = "Expired"
PHASE_TERMINATING = "Terminating"
PHASE_FAILED = "Failed"
PHASE_EXPORTING = "Exporting"
PHASE_EXPORTED = "Exported"
PHASES = (PHASE_PENDING, PHASE_PROVISIONING, PHASE_READY, PHASE_SUSPENDED, PHASE_EXPIRED,
          PHASE_TERMINATING, PHASE_FAILED, PHASE_EXPORTING, PHASE_EXPORTED)
BAD_PHASES = (PHASE_FAILED, PHASE_EXPIRED, PHASE_SUSPENDED)

# Reasons. License life-cycle reasons come from kameng.licensing.lifecycle.
R_READY = "Ready"
R_INVALID_SPEC = "InvalidSpec"
R_RECONCILE_ERROR = "ReconcileError"
R_DATABASE_NOT_READY = "DatabaseNotReady"
R_STOREFRONT_NOT_AVAILABLE = "StorefrontNotAvailable"
R_PROGRESSING = "Progressing"
R_SETTLED = "Settled"
R_NOT_STALLED = "NotStalled"
R_PROVISIONED = "Provisioned"
R_NOT_PROVISIONED = "NotProvisioned"
R_AVAILABLE = "Available"
R_NOT_AVAILABLE = "NotAvailable"
R_LICENSE_NOT_FOUND = "LicenseNotFound"
R_LICENSE_FOR_OTHER_SITE = "LicenseForOtherSite"
R_ROLEPOLICY_NOT_FOUND = "RolePolicyNotFound"
R_UNKNOWN_ROLE = "UnknownRole"
R_RECLAIMING = "Reclaiming"
R_RECLAIM_FAILED = "ReclaimFailed"
R_RECLAIM_SKIPPED = "ReclaimSkipped"
R_RECLAIMED = "Reclaimed"
R_EXPORTING = "Exporting"
R_EXPORTED = "Exported"
R_EXPORT_FAILED = "ExportFailed"
R_EXPORT_WAIVED = "ExportWaived"
R_NOTHING_TO_EXPORT = "NothingToExport"
R_TERMINATED = "Terminated"
R_VALID = "Valid"
# Tenancy: the operator touches only what it created for this very SubSite.
R_NAME_CONFLICT = "NameConflict"  # a derived name is taken by something not ours
R_RETAINED_DATA = "RetainedDataExists"  # another (deleted) SubSite's retained data
R_DOMAIN_CONFLICT = "DomainConflict"  # an earlier SubSite claims the same domain
R_FOREIGN_DRIFT = "ForeignChangesRemoved"  # someone else's additions to a pod template
R_ADOPTED = "RetainedDataAdopted"
# Events on a SubSite whose approvable fields (payments, domain, price rules, hidden
# products, members) changed: through an HQ approval, or straight in the YAML.
R_APPROVED_CHANGE = "ApprovedChangeApplied"
R_CHANGED_OUTSIDE_APPROVAL = "ChangedOutsideApproval"
# Tiered rights (kameng.contracts.plans): the SubSite asks for a feature its plan lacks.
R_PLAN_FEATURE_MISSING = "PlanFeatureMissing"
# Placement on one of several PostgreSQL servers.
R_NO_DATABASE_SERVER = "NoDatabaseServer"  # none fits (full, or the selector matches none)
R_PLACEMENT_CONFLICT = "DatabaseServerMismatch"  # annotation and record disagree
R_DATABASE_MOVING = "DatabaseMoving"
R_DATABASE_MOVED = "DatabaseMoved"

MAX_MESSAGE = 2000  # the schema allows 2048


def set_condition(conditions: list[dict[str, Any]] | None, type_: str, status: bool | str,
                  reason: str, message: str, now: datetime, generation: int
                  ) -> list[dict[str, Any]]:
    """``conditions`` with ``type_`` set, as a new list (the input is not changed).

    ``lastTransitionTime`` is kept while the status stays the same, so an unchanged
    situation yields an identical list and no write; a new type is appended.
    """
    value = status if isinstance(status, str) else ("True" if status else "False")
    out = [dict(c) for c in conditions or []]
    old = next((c for c in out if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else None
    new = {"type": type_, "status": value, "reason": reason,
           "message": message[:MAX_MESSAGE], "lastTransitionTime": since or format_time(now),
           "observedGeneration": generation}
    if old is None:
        out.append(new)
    else:
        out[out.index(old)] = new
    return out


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
