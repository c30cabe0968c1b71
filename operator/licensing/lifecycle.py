"""The one license life cycle: which state a license is in at a time, and until when.

Pure and dependency-free (stdlib and ``kameng.api`` only), so the SubSite verdict, the
License status, the token's mode in the storefront and the workers all read the same
answer. It works on a small :class:`Terms` value that can be built from a License spec
(the operator) or from verified token claims (the storefront, which has only those).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from kameng.api.holds import Hold
from kameng.api.license import (
    ACTIVE,
    EXPIRED,
    EXPIRING_SOON,
    GRACE,
    LIFECYCLE_REASONS,
    PENDING,
    SUSPENDED,
    LicenseSpec,
    LifeCycleState,
)

from .term import format_time, parse_duration, parse_time

# How long before the end of its term a license is reported as ExpiringSoon.
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

    @classmethod
    def from_spec(cls, spec: LicenseSpec, holds: tuple[Hold, ...] = ()) -> Terms:
        end = parse_time(spec.term.end)
        return cls(site=spec.sub_site, start=parse_time(spec.term.start), end=end,
                   grace_until=_after(end, spec.grace_period),
                   suspended=spec.suspended, suspend_reason=spec.suspend_reason,
                   holds=holds)

    @classmethod
    def from_claims(cls, claims: ClaimsLike) -> Terms:
        return cls(site=claims.site, start=_utc(claims.nbf), end=_utc(claims.exp),
                   grace_until=_utc(claims.grace_until), suspended=claims.suspended)


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
        expired past grace, or any hold at all (a payout hold keeps the shop selling)."""
        return self.state in (SUSPENDED, EXPIRED) or bool(self.terms.holds)


def state_at(terms: Terms, now: datetime,
             expiring_soon: timedelta = EXPIRING_SOON_LEAD) -> LifeCycle:
    """The state at ``now``. Each boundary belongs to the later state: at exactly
    ``start`` a license is Active, at ``end - expiring_soon`` ExpiringSoon, at ``end``
    in Grace and at ``grace_until`` Expired. Suspension (by the spec or by a hold that
    suspends, see :mod:`kameng.api.holds`) wins at any time."""
    now = _utc(now)
    t = terms
    warn_from = t.end - expiring_soon
    future = [p for p in (t.start, warn_from, t.end, t.grace_until) if p > now]
    nxt = min(future) if future else None
    end, grace = format_time(t.end), format_time(t.grace_until)
    state: LifeCycleState
    stops = [h for h in t.holds if h.suspends]
    if t.suspended:
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
