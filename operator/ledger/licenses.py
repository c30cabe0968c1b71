"""What the ledger remembers of each License: the term accounted for, and rate changes.

Two facts the settlement worker records when it sees a License (``kameng.workers.
settlement``), both in the ledger so a restart of the worker neither re-posts nor misses
anything:

* **The term accounted for** (``ledger.license_terms``): the furthest term end that has
  been invoiced (or was the License's end when the worker first saw it). When a License's
  end grows past it — whoever renewed it: HQ's page, ``kubectl kameng renew`` or a GitOps
  edit of ``spec.term.end`` — the renewal invoice for the added time is posted with the
  same idempotency key HQ's page uses (License + old end + new end), and the mark moves
  in the same transaction. Why the mark and not "the end the worker saw last" in memory:
  a renewal made while the worker was down is still seen after the restart (the mark is
  older than the License's end), and an invoice posted before a crash is never posted
  again (the mark moved with it, and the key is unique anyway). The mark never moves
  back: a term shortened and extended again (a GitOps revert of a CLI renewal, then the
  renewal committed to Git) is not charged twice for the same days.
* **Rate changes** (``ledger.rate_changes``): the License's fees and plan, each time
  they differ from the site's latest row, from when the worker saw them (the moment the
  worker's postings start using them, so shares and base fee agree). Statements pro-rate
  the base fee per part of a period from these rows (:func:`base_fee_parts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from kameng.licensing.term import Term, format_time, parse_time

from . import invoices
from .rules import Rates, round_half_up

# --- rate changes: pure -------------------------------------------------------------


@dataclass(frozen=True)
class RateChange:
    effective_at: datetime
    rates: Rates
    plan: str = ""

    def same_terms(self, rates: Rates, plan: str) -> bool:
        """Whether ``rates``/``plan`` say what this change says (the License's generation
        moves with any edit, e.g. a renewal, and is not a change of rates)."""
        return (_money(self.rates), self.plan) == (_money(rates), plan)


def _money(r: Rates) -> dict[str, Any]:
    d = r.to_json()
    d.pop("generation", None)
    return d


def rates_in_force(changes: list[RateChange], t: datetime) -> Rates:
    """The rates of the last change at or before ``t`` (``changes`` oldest first, not
    empty); before the first one, the first one's (nothing older is known)."""
    best = changes[0]
    for c in changes:
        if c.effective_at > t:
            break
        best = c
    return best.rates


@dataclass(frozen=True)
class FeePart:
    start: datetime
    end: datetime
    rates: Rates
    amount: int  # fen


def base_fee_parts(changes: list[RateChange], fallback: Rates, period: str,
                   start: datetime, end: datetime) -> list[FeePart]:
    """The base fee of the period [start, end) per part with one base annual fee.

    The rates in force at ``start`` are those of the last change at or before it (or the
    first change, if all are later: nothing older is known; or ``fallback`` — the rates
    at close — without any recorded change). Each later change inside the period starts
    a new part when it changes the base annual fee (a plan change without a fee change
    costs nothing and makes no line). Each part is the period's fee at its own rate times
    its share of the period, to the second, rounded half up to the fen — so a period with
    one part costs exactly :func:`kameng.ledger.rules.base_fee_share`.
    """
    ordered = sorted(changes, key=lambda c: c.effective_at)
    current = rates_in_force(ordered, start) if ordered else fallback
    bounds: list[tuple[datetime, Rates]] = [(start, current)]
    for c in ordered:
        if start < c.effective_at < end and \
                c.rates.base_annual_fee != bounds[-1][1].base_annual_fee:
            bounds.append((c.effective_at, c.rates))
    total = int((end - start).total_seconds())
    # A month is 1/12 of a year whatever its length; a day 1/365 (rules.base_fee_share).
    per_year = 12 * total if period == "Monthly" else 365 * 86400
    parts = []
    for i, (a, r) in enumerate(bounds):
        b = bounds[i + 1][0] if i + 1 < len(bounds) else end
        secs = int((b - a).total_seconds())
        parts.append(FeePart(a, b, r, round_half_up(r.base_annual_fee * secs, per_year)))
    return parts


# --- the ledger's copy --------------------------------------------------------------


async def rate_changes(conn: AsyncConnection, site: str) -> list[RateChange]:
    rows = await (await conn.execute(
        "SELECT effective_at, rates, plan FROM ledger.rate_changes WHERE site = %s"
        " ORDER BY effective_at, id", (site,))).fetchall()
    return [RateChange(r[0], Rates.from_json(r[1]), r[2]) for r in rows]


async def latest_rate_changes(conn: AsyncConnection) -> dict[str, RateChange]:
    """The latest change per site (what the worker compares a License with)."""
    rows = await (await conn.execute(
        "SELECT DISTINCT ON (site) site, effective_at, rates, plan FROM ledger.rate_changes"
        " ORDER BY site, effective_at DESC, id DESC")).fetchall()
    return {r[0]: RateChange(r[1], Rates.from_json(r[2]), r[3]) for r in rows}


async def record_rates(conn: AsyncConnection, site: str, rates: Rates, plan: str,
                       at: datetime) -> bool:
    """Record the site's rates from ``at`` unless they are its latest already (under the
    site's lock: two worker replicas record a change once). True: recorded."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rates:{site}",))
        row = await (await conn.execute(
            "SELECT effective_at, rates, plan FROM ledger.rate_changes WHERE site = %s"
            " ORDER BY effective_at DESC, id DESC LIMIT 1", (site,))).fetchone()
        if row and RateChange(row[0], Rates.from_json(row[1]), row[2]).same_terms(rates, plan):
            return False
        await conn.execute(
            "INSERT INTO ledger.rate_changes (site, license, plan, rates, effective_at)"
            " VALUES (%s, %s, %s, %s::jsonb, %s)",
            (site, rates.license, plan, json.dumps(rates.to_json()), at))
        return True


@dataclass(frozen=True)
class Accounted:
    term: Term
    license: str
    site: str


async def accounted_terms(conn: AsyncConnection) -> dict[str, Accounted]:
    """License uid → the term accounted for (one query for all, at the worker's start)."""
    rows = await (await conn.execute(
        "SELECT license_uid, license, site, term_start, term_end FROM ledger.license_terms"
    )).fetchall()
    return {r[0]: Accounted(Term(r[3], r[4]), r[1], r[2]) for r in rows}


async def _invoiced_chain(conn: AsyncConnection, license: str, site: str, since: datetime,
                          until: datetime) -> datetime:
    """How far renewal invoices already posted for ``license`` (e.g. by HQ's page, before
    the worker saw the License) reach from ``since``, following old end → new end."""
    cur, seen = since, set()
    while cur < until and cur not in seen:
        seen.add(cur)
        prefix = f"renewal:{license}:{format_time(cur)}:"
        rows = await (await conn.execute(
            # By site first (indexed), so a large journal is not scanned for the prefix.
            "SELECT key FROM ledger.entries WHERE site = %s AND kind = 'invoice'"
            " AND key LIKE %s",
            (site, prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        )).fetchall()
        ends = [parse_time(r[0][len(prefix):]) for r in rows]
        if not ends:
            break
        cur = max(ends)
    return cur


async def account_term(conn: AsyncConnection, uid: str, license: str, site: str,
                       term: Term, rates: Rates, now: datetime
                       ) -> tuple[Term, invoices.Invoice | None]:
    """Bring License ``uid``'s accounted term up to ``term``; post the renewal invoice
    for the time added since the mark, unless HQ's page did already. Returns the new mark
    and the invoice posted (None: first sight, no growth, already invoiced, no fee)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"term:{uid}",))
        row = await (await conn.execute(
            "SELECT term_start, term_end FROM ledger.license_terms WHERE license_uid = %s"
            " FOR UPDATE", (uid,))).fetchone()
        if row is None:  # first sight: the term as it is now was sold with the License
            await conn.execute(
                "INSERT INTO ledger.license_terms (license_uid, license, site, term_start,"
                " term_end) VALUES (%s, %s, %s, %s, %s)",
                (uid, license, site, term.start, term.end))
            return term, None
        mark = Term(row[0], row[1])
        if term.end <= mark.end:
            return mark, None  # no growth (or shortened: the mark never moves back)
        reached = await _invoiced_chain(conn, license, site, mark.end, term.end)
        posted = None
        if reached < term.end:
            # Before the renewal: the accounted term (its start as recorded, unless the
            # chain of HQ's invoices moved the end, then the License's own start).
            before = mark if reached == mark.end else Term(min(term.start, reached), reached)
            inv = invoices.renewal_invoice(license, site, rates, before, term)
            if await invoices.post_invoice(conn, inv, rates, now):
                posted = inv
        await conn.execute(
            "UPDATE ledger.license_terms SET term_start = %s, term_end = %s,"
            " updated_at = clock_timestamp() WHERE license_uid = %s",
            (term.start, term.end, uid))
        return term, posted
