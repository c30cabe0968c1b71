"""The one license life cycle: which state a license is in at a time, and until when.

Pure and dependency-free (stdlib and ``kameng.api`` only), so the SubSite verdict, the
License status, the token's mode in the storefront and the workers all read the same
answer. It works on a small :class:`Terms` value that can be built from a License spec
(the operator) or from verified token claims (the storefront, which has only those).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from kameng.api.holds import Hold, holds_of
from kameng.api.kinds import TERMINATED_AT_ANNOTATION
from kameng.api.license import (
    ACTIVE,
    EXPIRED,
    EXPIRING_SOON,
    GRACE,
    LIFECYCLE_REASONS,
    PENDING,
    SUSPENDED,
    TERMINATED,
    LicenseSpec,
    LifeCycleState,
)

from .term import format_time, parse_duration, parse_time

# How long before the end of its term a license is reported as ExpiringSoon, unless the
# License says otherwise (spec.expiringSoonBefore; tokens carry it as warnAt).
EXPIRING_SOON_LEAD = timedelta(days=30)

Mode = Literal["normal", "readOnly", "suspended"]
# What the storefront may do in each state; ExpiringSoon still sells.
_MODES: dict[str, Mode] = {ACTIVE: "normal", EXPIRING_SOON: "normal", GRACE: "readOnly"}


class ClaimsLike(Protocol):
    """The fields of a license token's claims the life cycle needs."""

    site: str
    nbf: datetime
    exp: datetime
    grace_until: datetime
    suspended: bool
    # When ExpiringSoon begins; None in tokens signed before the claim existed.
    warn_at: datetime | None


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def _after(t: datetime, duration: str) -> datetime:
    """``t`` plus a duration the API server accepted. Its pattern has no upper bound
    ("99999999999h"), so a sum past year 9999 means "never ends", not a crash that would
    stop the site's reconcile and the License's status."""
    try:
        return t + parse_duration(duration)
    except OverflowError:
        return END_OF_TIME


@dataclass(frozen=True)
class Terms:
    """The facts the life cycle depends on; every time is aware UTC."""

    site: str
    start: datetime
    end: datetime
    grace_until: datetime
    suspended: bool = False
    suspend_reason: str | None = None
    holds: tuple[Hold, ...] = ()
    # How long before ``end`` the license is ExpiringSoon (per License; one home for it:
    # every side builds its Terms from the spec or from the token, never a constant).
    expiring_soon_lead: timedelta = EXPIRING_SOON_LEAD
    # When the site's exit finished (annotation kameng.io/terminated-at, written by the
    # SubSite's deletion once its data was exported and reclaimed). Terminal: a later
    # term end does not bring the License back, the annotation outlives any spec edit.
    terminated_at: datetime | None = None

    @property
    def warn_at(self) -> datetime:
        """When ExpiringSoon begins (never before the start of time)."""
        try:
            return self.end - self.expiring_soon_lead
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC)

    @classmethod
    def from_spec(cls, spec: LicenseSpec, holds: tuple[Hold, ...] = (),
                  terminated_at: datetime | None = None) -> Terms:
        end = parse_time(spec.term.end)
        return cls(site=spec.sub_site, start=parse_time(spec.term.start), end=end,
                   grace_until=_after(end, spec.grace_period),
                   suspended=spec.suspended, suspend_reason=spec.suspend_reason,
                   holds=holds, expiring_soon_lead=_lead(spec.expiring_soon_before),
                   terminated_at=terminated_at)

    @classmethod
    def from_claims(cls, claims: ClaimsLike) -> Terms:
        end = _utc(claims.exp)
        lead = EXPIRING_SOON_LEAD if claims.warn_at is None else end - _utc(claims.warn_at)
        return cls(site=claims.site, start=_utc(claims.nbf), end=end,
                   grace_until=_utc(claims.grace_until), suspended=claims.suspended,
                   expiring_soon_lead=max(lead, timedelta(0)))

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Terms:
        """A License object as the API returns it: spec plus the holds and the
        termination in its annotations (what the risk and settlement workers read)."""
        ann = (obj.get("metadata") or {}).get("annotations")
        return cls.from_spec(LicenseSpec.model_validate(obj.get("spec") or {}),
                             holds_of(ann), terminated_of(ann))


def terminated_of(annotations: Mapping[str, str] | None) -> datetime | None:
    """When the License was terminated, from its annotations (None: it was not). A value
    that is not a time still terminates (a person's hand-written mark is never ignored,
    like a hold's): it counts from the start of time."""
    raw = (annotations or {}).get(TERMINATED_AT_ANNOTATION)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def not_renewable(obj: dict[str, Any]) -> str | None:
    """Why a License object (as the API returns it) cannot be renewed, or None. A
    terminated License stays Terminated whatever its term says (its site was exported
    and removed), so extending it would only bill a site that no longer exists:
    ``kubectl kameng renew`` and HQ's page refuse it, the settlement worker invoices
    nothing for it."""
    at = terminated_of((obj.get("metadata") or {}).get("annotations"))
    if at is None:
        return None
    name = (obj.get("metadata") or {}).get("name", "")
    return (f"License {name} was terminated {format_time(at)} (its site was exported and "
            "removed); a renewal needs a new SubSite and License")


def _lead(duration: str) -> timedelta:
    try:
        return parse_duration(duration)
    except OverflowError:  # "99999999999h": ExpiringSoon for the whole term
        return timedelta.max


@dataclass(frozen=True)
class LifeCycle:
    state: LifeCycleState
    reason: str
    message: str
    next_change: datetime | None  # when the state changes by time alone
    terms: Terms

    @property
    def selling(self) -> bool:
        """Whether the storefront may take orders."""
        return self.state in (ACTIVE, EXPIRING_SOON)

    @property
    def mode(self) -> Mode:
        return _MODES.get(self.state, "suspended")

    @property
    def payouts_held(self) -> bool:
        """Whether HQ must hold the partner's payouts: suspended (by spec or a hold),
        expired past grace, terminated, or any hold at all (a payout hold keeps the shop
        selling). A terminated site's balance is settled by a person, not paid out."""
        return self.state in (SUSPENDED, EXPIRED, TERMINATED) or bool(self.terms.holds)


def state_at(terms: Terms, now: datetime, expiring_soon: timedelta | None = None) -> LifeCycle:
    """The state at ``now`` (``expiring_soon`` overrides the License's lead time).
    Each boundary belongs to the later state: at exactly
    ``start`` a license is Active, at ``end - expiring_soon`` ExpiringSoon, at ``end``
    in Grace and at ``grace_until`` Expired. Termination (from ``terminated_at`` on) wins
    over everything and never ends; suspension (by the spec or by a hold that
    suspends, see :mod:`kameng.api.holds`) wins over the term at any time."""
    now = _utc(now)
    t = terms
    if expiring_soon is not None:
        t = replace(t, expiring_soon_lead=expiring_soon)
    warn_from = t.warn_at
    points = (t.start, warn_from, t.end, t.grace_until, t.terminated_at)
    future = [p for p in points if p is not None and p > now]
    nxt = min(future) if future else None
    end, grace = format_time(t.end), format_time(t.grace_until)
    state: LifeCycleState
    stops = [h for h in t.holds if h.suspends]
    if t.terminated_at is not None and now >= t.terminated_at:
        # Terminal: the site was exported and removed; nothing comes after it.
        state, message, nxt = TERMINATED, (
            f"terminated {format_time(t.terminated_at)}: the site was exported and "
            "removed; a renewal needs a new SubSite and License (or HQ reinstates this "
            f"one by removing its annotation {TERMINATED_AT_ANNOTATION})"), None
    elif t.suspended:
        why = f": {t.suspend_reason}" if t.suspend_reason else ""
        state, message = SUSPENDED, f"suspended by HQ{why}"
    elif stops:
        h = stops[0]
        why = f": {h.reason}" if h.reason else ""
        state, message = SUSPENDED, (f"held ({h.kind}){why}; lift with "
                                     f"`kubectl kameng release {t.site} --kind {h.kind}`")
    elif now < t.start:
        state, message = PENDING, f"term starts {format_time(t.start)}"
    elif now < warn_from:
        state, message = ACTIVE, f"valid until {end}"
    elif now < t.end:
        state, message = EXPIRING_SOON, (f"term ends {end}; renew with "
                                         f"`kubectl kameng renew {t.site} --extend 365d`")
    elif now < t.grace_until:
        state, message = GRACE, f"term ended {end}; storefront read-only until {grace}"
    else:
        state, message = EXPIRED, f"grace ended {grace}; storefront suspended"
    return LifeCycle(state=state, reason=LIFECYCLE_REASONS[state], message=message, next_change=nxt,
                     terms=t)


_DAY, _HOUR = timedelta(days=1), timedelta(hours=1)
_TEN_MIN, _MIN = timedelta(minutes=10), timedelta(minutes=1)


def time_left(terms: Terms, now: datetime) -> tuple[str, datetime | None]:
    """What `kubectl get lic` shows as time left, and when that text next changes.

    The text is coarse on purpose, so the status is written when its granularity step
    passes, not every reconcile: whole days while two days or more are left, whole hours
    while two hours or more are left, then 10-minute steps (rounded up), and minutes in
    the last ten (a License in its last hour costs 15 writes, not 3600). Until the end
    of the term it counts to ``end``; in grace to ``grace_until`` ("grace 5h");
    afterwards "expired". A term that has not begun says "starts in 3d".
    """
    now = _utc(now)
    if terms.terminated_at is not None and now >= terms.terminated_at:
        return "terminated", None
    if now < terms.start:
        prefix, target = "starts in ", terms.start
    elif now < terms.end:
        prefix, target = "", terms.end
    elif now < terms.grace_until:
        prefix, target = "grace ", terms.grace_until
    else:
        return "expired", None
    if target == END_OF_TIME:
        return f"{prefix}unlimited".strip(), None
    left = target - now
    if left >= 2 * _DAY:
        n = left // _DAY
        return f"{prefix}{n}d", target - n * _DAY
    if left >= 2 * _HOUR:
        n = left // _HOUR
        return f"{prefix}{n}h", target - n * _HOUR
    # Ceiling: "50m" means at most fifty minutes are left; the last ten count by minute.
    step = _TEN_MIN if left > _TEN_MIN else _MIN
    n = -(-left // step)
    return f"{prefix}{n * (step // _MIN)}m", target - (n - 1) * step
