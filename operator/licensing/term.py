"""Pure term arithmetic: durations, times and renewal (Keygen-like strategies)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kameng.api.common import format_time

__all__ = ["Term", "format_time", "parse_duration", "parse_time", "renew", "renewal_fee",
           "renewal_of_spec"]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """`72h`, `30m`, `365d`, `1d12h` → timedelta. Days are a CLI convenience only."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 365d, 72h or 90m)")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def parse_time(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r} (use RFC 3339, e.g. 2027-01-01T00:00:00Z)")
    return dt.astimezone(UTC)


@dataclass(frozen=True)
class Term:
    start: datetime
    end: datetime


def renew(term: Term, extend_by: timedelta, strategy: str, now: datetime) -> Term:
    """The term after a renewal of `extend_by`.

    FromExpiry always extends from the current end, so a partner who renews late still
    pays for the days in between (Keygen's "from expiry"). FromNowIfExpired restarts an
    already expired license from now, so the lapse is not charged.
    """
    if extend_by <= timedelta(0):
        raise ValueError("a renewal must extend the term by a positive duration")
    if strategy == "FromExpiry":
        return Term(term.start, term.end + extend_by)
    if strategy == "FromNowIfExpired":
        if term.end <= now:
            return Term(now, now + extend_by)
        return Term(term.start, term.end + extend_by)
    raise ValueError(f"unknown renewal strategy {strategy!r}")


YEAR = timedelta(days=365)


def renewal_fee(annual_fee_fen: int, before: Term, after: Term) -> int:
    """The base fee a renewal invoices: the annual fee pro-rated to the time the renewal
    adds (to the second, rounded half up to the fen; a year is 365 days). FromExpiry
    adds ``after.end - before.end``; FromNowIfExpired restarts the term, so it charges
    the whole new term and not the lapse."""
    # Restarted from now: the new term is what is sold.
    restarted = after.start > before.start
    added = after.end - after.start if restarted else after.end - before.end
    seconds = max(0, int(added.total_seconds()))
    year = int(YEAR.total_seconds())
    return (annual_fee_fen * seconds * 2 + year) // (2 * year)


def renewal_of_spec(spec: dict[str, object], extend_by: timedelta, now: datetime
                    ) -> tuple[Term, Term]:
    """(current, renewed) term of a License spec (camelCase, as the API returns it),
    by its own renewal strategy: the one computation ``kubectl kameng renew``, HQ's
    back office and the operator's invoice use."""
    term = spec["term"]  # type: ignore[index]
    current = Term(parse_time(term["start"]), parse_time(term["end"]))  # type: ignore[index]
    strategy = (spec.get("renewal") or {}).get("strategy", "FromExpiry")  # type: ignore[union-attr]
    return current, renew(current, extend_by, str(strategy), now)
