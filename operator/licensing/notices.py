"""Expiry notices (pure): which notice is due at a time, and when the next one is.

A License names lead times before the end of its term (default 720h/168h/24h). Each is
sent once per term: the sent ones are remembered in the License's status with the term
end they were for, so an operator restart does not resend and a renewal (a new term
end) starts afresh. When several lead times are due at once (the operator was down, or
a License was created with little time left) only the most urgent one is sent and the
others are marked as passed: a partner gets one notice, not three at the same second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .lifecycle import Terms
from .term import format_time, parse_duration


@dataclass(frozen=True)
class DueNotice:
    before: str  # the lead time as the License spells it, e.g. "168h"
    left: timedelta  # time left until the end of the term
    passed: tuple[str, ...]  # every lead time this notice settles (it included)


def _leads(leads: Iterable[str]) -> list[tuple[str, timedelta]]:
    out = []
    for text in leads:
        try:
            out.append((text, parse_duration(text)))
        except (ValueError, OverflowError):
            continue  # the CRD admits nothing else; a bad one is skipped, not fatal
    return out


def sent_for_term(sent: Iterable[Mapping[str, Any]] | None, terms: Terms) -> list[dict[str, Any]]:
    """The records that belong to the current term (a renewal drops the others)."""
    end = format_time(terms.end)
    return [dict(r) for r in sent or () if r.get("termEnd") == end]


def due(terms: Terms, leads: Iterable[str], sent: Iterable[Mapping[str, Any]] | None,
        now: datetime) -> DueNotice | None:
    """The notice to send at ``now``, or None. Notices go out during the term only
    (from ``end - lead`` until ``end``) and never before the term has begun."""
    if now < terms.start or now >= terms.end:
        return None
    done = {r["before"] for r in sent_for_term(sent, terms)}
    pending = [(text, lead) for text, lead in _leads(leads)
               if text not in done and now >= _minus(terms.end, lead)]
    if not pending:
        return None
    text, _ = min(pending, key=lambda p: p[1])
    return DueNotice(before=text, left=terms.end - now, passed=tuple(t for t, _ in pending))


def next_due(terms: Terms, leads: Iterable[str], sent: Iterable[Mapping[str, Any]] | None,
             now: datetime) -> datetime | None:
    """When the next notice falls due by time alone (for the operator's clock)."""
    done = {r["before"] for r in sent_for_term(sent, terms)}
    points = [max(_minus(terms.end, lead), terms.start) for text, lead in _leads(leads)
              if text not in done]
    future = [p for p in points if now < p < terms.end]
    return min(future, default=None)


def records(passed: Iterable[str], terms: Terms, now: datetime) -> list[dict[str, Any]]:
    end, at = format_time(terms.end), format_time(now)
    return [{"before": b, "termEnd": end, "at": at} for b in passed]


def _minus(t: datetime, lead: timedelta) -> datetime:
    try:
        return t - lead
    except OverflowError:
        return datetime.min.replace(tzinfo=t.tzinfo)
