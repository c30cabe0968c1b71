"""Statements per License ``settlementPeriod``: figures as a pure function of entries.

The same function closes a statement and re-computes it in ``kameng ledger verify``, so a
closed statement is reproducible from the journal (rates are read from the entries, never
from today's License).

Figures (integer fen): ``gross`` (sales), ``refunds``, ``revenue_share`` per category (the
share of sales minus the share given back by refunds), ``base_fee`` (the pro-rated base
annual fee), ``adjustments`` (the net effect on the payable of late entries whose own
period had closed), ``net_payable`` = gross − refunds − Σ revenue_share − base_fee +
adjustments, ``withdrawals`` (holds less voids), ``opening``/``closing`` balance (closing
= opening + net_payable − withdrawals), and ``orders`` (per order: category, gross,
refunded, share, net).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import licenses, rules
from .repo import post_single, site_lock_key
from .rules import Rates


def payable_effect(kind: str, amount: int, share: int) -> int:
    """What an entry does to the partner's payable (credit = +)."""
    return {"sale": amount - share, "refund": -(amount - share), "fee": -amount,
            "withdrawal.hold": -amount, "withdrawal.void": amount}.get(kind, 0)


def compute(entries: Iterable[Mapping[str, Any]], opening: int, base_fee: int
            ) -> dict[str, Any]:
    """Figures of one period from its entries (dicts: kind, order_id, category, amount,
    share, adjustment) and the opening balance and base fee of the period."""
    gross = refunds = adjustments = withdrawn = 0
    shares: dict[str, int] = {}
    orders: dict[str, dict[str, Any]] = {}
    fees: list[dict[str, Any]] = []
    for e in entries:
        kind, amount, share = e["kind"], int(e["amount"]), int(e["share"])
        if kind == "fee" and not e["adjustment"] and e.get("event_at") is not None:
            fees.append({"from": rules._utc(e["event_at"]).isoformat(), "amount": amount,
                         "base_annual_fee": int((e.get("rates") or {})
                                                .get("base_annual_fee", 0))})
        if kind in ("withdrawal.hold", "withdrawal.void"):
            withdrawn += amount if kind == "withdrawal.hold" else -amount
            continue
        if kind not in ("sale", "refund"):
            continue  # the fee is passed in; payouts move no payable
        if e["adjustment"]:
            adjustments += payable_effect(kind, amount, share)
            continue
        sign = 1 if kind == "sale" else -1
        if kind == "sale":
            gross += amount
        else:
            refunds += amount
        cat = e["category"]
        shares[cat] = shares.get(cat, 0) + sign * share
        o = orders.setdefault(e["order_id"], {"order_id": e["order_id"], "category": cat,
                                              "gross": 0, "refunded": 0, "share": 0})
        o["gross" if kind == "sale" else "refunded"] += amount
        o["share"] += sign * share
    for o in orders.values():
        o["net"] = o["gross"] - o["refunded"] - o["share"]
    net = gross - refunds - sum(shares.values()) - base_fee + adjustments
    out = {"gross": gross, "refunds": refunds,
           "revenue_share": dict(sorted(shares.items())), "base_fee": base_fee,
           "adjustments": adjustments, "net_payable": net, "withdrawals": withdrawn,
           "opening": opening, "closing": opening + net - withdrawn,
           "orders": sorted(orders.values(), key=lambda o: o["order_id"])}
    if len(fees) > 1:
        # Fees changed inside the period: one line per part (from its start, at its own
        # annual fee). Only then, so statements closed before this existed re-compute.
        out["base_fee_lines"] = sorted(fees, key=lambda f: f["from"])
    return out


_COLUMNS = "kind, order_id, category, amount, share, adjustment, rates, event_at"


async def period_entries(conn: AsyncConnection, site: str, start: datetime
                         ) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_COLUMNS} FROM ledger.entries"  # noqa: S608
                      " WHERE site = %s AND period_start = %s ORDER BY id", (site, start))
    return await cur.fetchall()


async def opening_balance(conn: AsyncConnection, site: str, start: datetime) -> int:
    row = await (await conn.execute(
        "SELECT figures->>'closing' FROM ledger.statements WHERE site = %s"
        " AND period_start < %s ORDER BY period_start DESC LIMIT 1", (site, start))).fetchone()
    return int(row[0]) if row else 0


async def draft(conn: AsyncConnection, site: str, rates: Rates, at: datetime
                ) -> tuple[datetime, datetime, dict[str, Any]]:
    """The figures of the (open) period holding ``at``, as they stand."""
    start, end = rules.period_bounds(rates.period, at)
    entries = await period_entries(conn, site, start)
    fee = [e for e in entries if e["kind"] == "fee"]
    if fee:
        base = sum(int(e["amount"]) for e in fee)
    else:  # not closed yet: the lines the close will post, shown as they stand
        parts = await fee_parts(conn, site, rates, start, end)
        base = sum(p.amount for p in parts)
        entries = [*entries, *(_fee_line(p) for p in parts if p.amount)] \
            if len(parts) > 1 else entries
    return start, end, compute(entries, await opening_balance(conn, site, start), base)


async def fee_parts(conn: AsyncConnection, site: str, rates: Rates, start: datetime,
                    end: datetime) -> list[licenses.FeePart]:
    """The base fee of a period per part with one rate (fees changed inside it)."""
    changes = await licenses.rate_changes(conn, site)
    return licenses.base_fee_parts(changes, rates, rates.period, start, end)


def _fee_line(p: licenses.FeePart) -> dict[str, Any]:
    return {"kind": "fee", "order_id": "", "category": "", "amount": p.amount, "share": 0,
            "adjustment": False, "rates": p.rates.to_json(), "event_at": p.start}


async def close(conn: AsyncConnection, site: str, rates: Rates, start: datetime,
                ) -> dict[str, Any]:
    """Close the period beginning at ``start``: post the base fee, freeze the figures.

    Idempotent (a closed period returns its frozen figures). Takes the site's exclusive
    statement lock, so no batch assigns an entry to the period while it closes; entries
    for it that arrive later land in the next period as adjustments.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (site_lock_key(site),))
        row = await (await conn.execute(
            "SELECT figures FROM ledger.statements WHERE site = %s AND period_start = %s",
            (site, start))).fetchone()
        if row:
            return row[0]
        s, end = rules.period_bounds(rates.period, start)
        parts = await fee_parts(conn, site, rates, s, end)
        fee = sum(p.amount for p in parts)
        for p in parts:
            if not p.amount:
                continue
            # Posted inside the lock (re-entrant for this session): place() still sees
            # the period open. One entry per part, dated at its start and carrying the
            # rates of that part, so the statement's lines re-compute from the journal;
            # a period with one part keeps the key and inputs it always had.
            one = len(parts) == 1
            inputs: dict[str, Any] = {"site": site, "period": s.isoformat(), "fee": p.amount}
            if not one:
                inputs |= {"from": p.start.isoformat(), "to": p.end.isoformat()}
            await post_single(conn, key=f"fee:{site}:{s.isoformat()}" + (
                "" if one else f":{p.start.isoformat()}"), kind="fee", site=site,
                currency=rates.currency, amount=p.amount, legs=rules.fee_legs(site, p.amount),
                # The part's rates, but the period this statement closes by: an entry
                # must land in this period even if settlementPeriod changed meanwhile.
                rates=replace(p.rates, period=rates.period), event_at=p.start,
                inputs=inputs)
        entries = await period_entries(conn, site, s)
        figures = compute(entries, await opening_balance(conn, site, s), fee)
        await conn.execute(
            "INSERT INTO ledger.statements (site, period_start, period_end, currency, figures)"
            " VALUES (%s, %s, %s, %s, %s)", (site, s, end, rates.currency, Jsonb(figures)))
        return figures


async def find(conn: AsyncConnection, site: str, rates: Rates | None, at: datetime
               ) -> tuple[datetime, datetime, dict[str, Any], bool]:
    """The statement of the period holding ``at``: the closed one if it exists (frozen
    figures), else a draft of the open period (needs ``rates``). Last item: closed."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT period_start, period_end, figures FROM ledger.statements"
                      " WHERE site = %s AND period_start <= %s AND %s < period_end",
                      (site, at, at))
    row = await cur.fetchone()
    if row:
        return row["period_start"], row["period_end"], row["figures"], True
    if rates is None:
        raise LookupError(f"no closed statement of {site} covers {at:%Y-%m-%d} and no License "
                          "to draft one")
    start, end, figures = await draft(conn, site, rates, at)
    return start, end, figures, False


def to_csv(site: str, start: datetime, end: datetime, figures: dict[str, Any],
           closed: bool) -> str:
    """The statement as CSV (amounts in yuan with two decimals): a summary block, then one
    row per order. The one CSV writer: the terminal and both back offices use it."""
    import csv
    import io

    from kameng.contracts.money import fen_to_str

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["site", site, "period", f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}",
                "closed" if closed else "draft"])
    for k in ("opening", "gross", "refunds"):
        w.writerow([k, fen_to_str(figures[k])])
    for cat, fen in figures["revenue_share"].items():
        w.writerow([f"revenue_share:{cat}", fen_to_str(fen)])
    for line in figures.get("base_fee_lines", []):
        w.writerow([f"base_fee:from {line['from']}", fen_to_str(line["amount"]),
                    "annual", fen_to_str(line["base_annual_fee"])])
    for k in ("base_fee", "adjustments", "net_payable", "withdrawals", "closing"):
        w.writerow([k, fen_to_str(figures[k])])
    w.writerow([])
    w.writerow(["order_id", "category", "gross", "refunded", "share", "net"])
    for o in figures["orders"]:
        w.writerow([o["order_id"], o["category"], fen_to_str(o["gross"]),
                    fen_to_str(o["refunded"]), fen_to_str(o["share"]), fen_to_str(o["net"])])
    return buf.getvalue()
