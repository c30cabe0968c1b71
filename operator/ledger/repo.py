"""The ledger in PostgreSQL: migrations, batch posting with idempotency, withdrawals.

One transaction per batch of events. Inside it, accounts are locked in id order
(``SELECT … FOR UPDATE ORDER BY id``) before any leg is written, so two replicas
posting to the same accounts queue instead of deadlocking; a per-site shared advisory
lock keeps a statement from closing under a batch that assigns entries to its period.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from kameng.contracts.events import OrderEvent

from . import rules
from .rules import PostingError, Rates

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6C6564676572  # "ledger": only has to differ from other migration locks
POSTED_EVENTS = ("order.paid", "order.refunded", "withdrawal.requested", "topup")


def site_lock_key(site: str) -> str:
    return f"kameng-ledger:{site}"


def migration_files() -> list[tuple[str, str]]:
    out = []
    for entry in resources.files("kameng.ledger").joinpath("migrations").iterdir():
        if entry.name.startswith("ledger_") and entry.name.endswith(".sql"):
            out.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: AsyncConnection) -> list[str]:
    """Apply the ledger's pending migrations (own table, own lock). Returns versions."""
    applied: list[str] = []
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS ledger_migrations ("
                           " version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in await (await conn.execute(
            "SELECT version FROM ledger_migrations")).fetchall()}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)  # type: ignore[arg-type]  # trusted package file
                await conn.execute("INSERT INTO ledger_migrations (version) VALUES (%s)",
                                   (version,))
            applied.append(version)
            log.info("ledger migration applied", extra={"version": version})
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


@dataclass(frozen=True)
class Conflict:
    key: str
    stored_hash: str
    offered_hash: str


@dataclass
class Outcome:
    posted: int = 0
    duplicates: int = 0
    ignored: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    withdrawals: list[str] = field(default_factory=list)  # keys of new withdrawal holds


def event_hash(ev: OrderEvent) -> str:
    """The inputs that decide an event's entry. Not the rates (they come from the License
    at posting time) and not ``ts``: a re-publication of the same event is the same event.
    ``funding`` only when it is ``wallet``: entries posted before the field existed keep
    their hash, and the same id re-sent with the other funding is a conflict."""
    extra = {"funding": "wallet"} if rules.funding_of(ev.funding) == "wallet" else {}
    return rules.input_hash(event=ev.event, site=ev.site, order_id=ev.order_id,
                            amount=ev.amount, currency=ev.currency, category=ev.category,
                            **extra)


@dataclass
class _Entry:
    key: str
    hash: str
    kind: str
    site: str
    order_id: str
    category: str
    currency: str
    amount: int
    share: int
    rates: dict[str, Any] | Jsonb  # or already serialised (:func:`_raw_jsonb`)
    event_at: datetime
    period_start: datetime
    adjustment: bool
    legs: list[rules.Leg]
    funding: str = "channel"


async def _lock_accounts(conn: AsyncConnection, names: set[tuple[str, str]]
                         ) -> dict[tuple[str, str], dict[str, Any]]:
    """Create missing accounts, then lock all of them in id order."""
    pairs = sorted(names)
    await conn.execute(
        "INSERT INTO ledger.accounts (name, currency, site, no_overdraft)"
        " SELECT n, c, s, o FROM unnest(%s::text[], %s::text[], %s::text[], %s::bool[])"
        "   AS t(n, c, s, o) ON CONFLICT (name, currency) DO NOTHING",
        ([n for n, _ in pairs], [c for _, c in pairs],
         [n.split(":")[1] if n.startswith("site:") else None for n, _ in pairs],
         [n.endswith(":payable") for n, _ in pairs]))
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT a.id, a.name, a.currency, a.balance FROM ledger.accounts a"
        " JOIN unnest(%s::text[], %s::text[]) AS t(n, c) ON a.name = t.n AND a.currency = t.c"
        " ORDER BY a.id FOR UPDATE OF a",
        ([n for n, _ in pairs], [c for _, c in pairs]))
    return {(r["name"], r["currency"]): r for r in await cur.fetchall()}


async def _site_periods(conn: AsyncConnection, sites: list[str]) -> dict[str, datetime | None]:
    """Take each site's shared statement lock (sorted) and return its closed-until time."""
    # One round trip for all of them, taken in a fixed order (no lock-order deadlock
    # with another batch); the closer takes the same key exclusively.
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtext(k))"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS t(k, i) ORDER BY i",
        ([site_lock_key(s) for s in sorted(sites)],))
    rows = await (await conn.execute(
        "SELECT site, max(period_end) FROM ledger.statements WHERE site = ANY(%s) GROUP BY site",
        (sorted(sites),))).fetchall()
    out: dict[str, datetime | None] = dict.fromkeys(sites)
    out.update({r[0]: r[1] for r in rows})
    return out


def place(period: str, event_at: datetime, closed_until: datetime | None
          ) -> tuple[datetime, bool]:
    """The period an entry counts in: its own, or (closed already) the first open one."""
    start, _ = rules.period_bounds(period, event_at)
    if closed_until is not None and start < closed_until:
        return rules.period_bounds(period, closed_until)[0], True
    return start, False


async def post_events(conn: AsyncConnection, events: list[OrderEvent],
                      rates: dict[str, Rates],
                      rates_at: Callable[[str, datetime], Rates] | None = None,
                      hash_of: Callable[[OrderEvent], str] = event_hash) -> Outcome:
    """Post a batch of order events in ONE transaction (the caller's, if one is open).

    ``rates`` holds the License terms in force per site; ``rates_at(site, t)``, when
    given, the terms in force at an event's own time (a backlog posted after a fee
    change keeps the rate of when it was sold). A duplicate (same key, same
    inputs) is skipped; the same key with other inputs is a :class:`Conflict`, recorded
    and returned, never posted. A refund beyond what was paid, or of an order never
    paid, raises :class:`PostingError` and the whole batch applies nothing.
    ``hash_of`` is :func:`event_hash` or a lookup of hashes made by it ahead of time
    (the worker hashes the next batch while this one is in the database).
    """
    out = Outcome()
    todo = [ev for ev in events if ev.event in POSTED_EVENTS]
    out.ignored = len(events) - len(todo)
    if not todo:
        return out
    async with conn.transaction():
        keys = [ev.event_id for ev in todo]
        # One round trip; %b: the keys travel as a binary array (the text dumper escapes
        # each element with a regex).
        rows = await (await conn.execute(
            "SELECT key, input_hash FROM ledger.entries WHERE key = ANY(%b::text[])"
            " UNION ALL"
            " SELECT key, input_hash FROM ledger.withdrawals WHERE key = ANY(%b::text[])",
            (keys, keys))).fetchall()
        known: dict[str, str] = {r[0]: r[1] for r in rows}
        fresh: list[OrderEvent] = []
        for ev in todo:
            h = hash_of(ev)
            if ev.event_id in known:
                if known[ev.event_id] == h:
                    out.duplicates += 1
                else:
                    out.conflicts.append(Conflict(ev.event_id, known[ev.event_id], h))
                continue
            known[ev.event_id] = h
            fresh.append(ev)
        if out.conflicts:
            await conn.execute(
                "INSERT INTO ledger.conflicts (key, stored_hash, offered_hash)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])",
                ([c.key for c in out.conflicts], [c.stored_hash for c in out.conflicts],
                 [c.offered_hash for c in out.conflicts]))
        if not fresh:
            return out
        sites = sorted({ev.site for ev in fresh})
        for site in sites:
            if site not in rates:
                raise PostingError(f"no License in force for site {site!r}")
        closed = await _site_periods(conn, sites)
        names: set[tuple[str, str]] = set()
        for ev in fresh:
            names |= {(rules.ESCROW, ev.currency), (rules.REVENUE_SHARE, ev.currency),
                      (rules.payable(ev.site), ev.currency),
                      (rules.withdrawals(ev.site), ev.currency)}
            if ev.event == "topup" or ev.event == "order.refunded" \
                    or rules.funding_of(ev.funding) == "wallet":
                # A refund's funding is its sale's, known only below: lock the account
                # it may need now (accounts are locked once, in id order).
                names.add((rules.wallets(ev.site), ev.currency))
        accounts = await _lock_accounts(conn, names)
        balance = {k: int(v["balance"]) for k, v in accounts.items()}
        # What earlier entries did to each order refunded in this batch.
        orders: dict[tuple[str, str], dict[str, Any]] = {}
        refunded = [(ev.site, ev.order_id) for ev in fresh if ev.event == "order.refunded"]
        if refunded:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT e.site, e.order_id, e.kind, e.amount, e.share, e.category, e.currency,"
                " e.funding"
                " FROM ledger.entries e JOIN unnest(%s::text[], %s::text[]) AS t(s, o)"
                "   ON e.site = t.s AND e.order_id = t.o WHERE e.kind IN ('sale', 'refund')",
                ([s for s, _ in refunded], [o for _, o in refunded]))
            for r in await cur.fetchall():
                o = orders.setdefault((r["site"], r["order_id"]), {
                    "paid": 0, "share": 0, "refunded": 0, "category": "", "currency": "",
                    "funding": "channel"})
                if r["kind"] == "sale":
                    o.update(paid=r["amount"], share=r["share"], category=r["category"],
                             currency=r["currency"], funding=r["funding"])
                else:
                    o["refunded"] += r["amount"]
        # Serialised once per site and batch, not once per entry.
        # Serialised once per distinct Rates and batch, not once per entry (the Rates is
        # kept beside its JSON so its id is not reused within the batch).
        rates_json: dict[int, tuple[Rates, Jsonb]] = {}
        entries: list[_Entry] = []
        holds: list[OrderEvent] = []
        voided: list[tuple[OrderEvent, str]] = []
        for ev in fresh:
            r = rates_at(ev.site, ev.ts) if rates_at else rates[ev.site]
            if id(r) not in rates_json:
                rates_json[id(r)] = (r, _raw_jsonb(json.dumps(r.to_json())))
            # The period is the one the statement closes by (today's License).
            period_start, adjustment = place(rates[ev.site].period, ev.ts, closed[ev.site])
            base = dict(key=ev.event_id, hash=known[ev.event_id], site=ev.site,
                        order_id=ev.order_id, currency=ev.currency, amount=ev.amount,
                        rates=rates_json[id(r)][1], event_at=ev.ts, period_start=period_start,
                        adjustment=adjustment)
            if ev.event == "order.paid":
                if ev.amount <= 0:
                    raise PostingError(f"paid amount of {ev.event_id} must be positive")
                if ev.currency != r.currency:
                    raise PostingError(f"{ev.event_id}: currency {ev.currency} is not the "
                                       f"License's {r.currency}")
                share = rules.share_of(ev.amount, r.share_bp.get(ev.category, 0))
                funding = rules.funding_of(ev.funding)
                legs = rules.sale_legs(ev.site, ev.amount, share, funding)
                entries.append(_Entry(kind="sale", category=ev.category, share=share,
                                      legs=legs, funding=funding, **base))
                orders[(ev.site, ev.order_id)] = {"paid": ev.amount, "share": share,
                                                  "refunded": 0, "category": ev.category,
                                                  "currency": ev.currency,
                                                  "funding": funding}
            elif ev.event == "order.refunded":
                o = orders.get((ev.site, ev.order_id))
                if not o or not o["paid"]:
                    raise PostingError(f"{ev.event_id}: refund of an order the ledger has "
                                       "no payment for (yet)")
                if o["currency"] != ev.currency:
                    raise PostingError(f"{ev.event_id}: refund currency differs from payment")
                back = rules.refund_share(o["share"], o["paid"], o["refunded"], ev.amount)
                o["refunded"] += ev.amount
                # The money goes back the way it came (the sale's funding, as posted):
                # a wallet payment's refund returns to the wallets, never out of escrow.
                legs = rules.refund_legs(ev.site, ev.amount, back, o["funding"])
                entries.append(_Entry(kind="refund", category=o["category"], share=back,
                                      legs=legs, funding=o["funding"], **base))
            elif ev.event == "topup":
                if ev.amount <= 0:
                    raise PostingError(f"top-up amount of {ev.event_id} must be positive")
                if ev.currency != r.currency:
                    raise PostingError(f"{ev.event_id}: currency {ev.currency} is not the "
                                       f"License's {r.currency}")
                entries.append(_Entry(kind="topup", category="", share=0,
                                      legs=rules.topup_legs(ev.site, ev.amount), **base))
            else:  # withdrawal.requested
                if ev.amount <= 0:
                    voided.append((ev, "amount must be positive"))
                    continue
                available = -balance[(rules.payable(ev.site), ev.currency)]
                if ev.amount > available:
                    # Never overdrawn: refused at once, recorded, visible to the shop.
                    voided.append((ev, f"exceeds the available balance ({available} fen)"))
                    continue
                legs = rules.hold_legs(ev.site, ev.amount)
                entries.append(_Entry(kind="withdrawal.hold", category="", share=0,
                                      legs=legs, **base))
                holds.append(ev)
            for name, amt in entries[-1].legs:
                balance[(name, ev.currency)] += amt
        await _insert(conn, entries, accounts)
        if holds or voided:
            rows = [(ev, "pending", "") for ev in holds] + [(ev, "voided", why)
                                                            for ev, why in voided]
            await conn.execute(
                "INSERT INTO ledger.withdrawals (key, input_hash, site, withdrawal_id,"
                " currency, amount, status, reason, requested_at)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::bigint[], %s::text[], %s::text[], %s::timestamptz[])",
                ([e.event_id for e, _, _ in rows], [known[e.event_id] for e, _, _ in rows],
                 [e.site for e, _, _ in rows], [e.order_id for e, _, _ in rows],
                 [e.currency for e, _, _ in rows], [e.amount for e, _, _ in rows],
                 [s for _, s, _ in rows], [w for _, _, w in rows],
                 [e.ts for e, _, _ in rows]))
        out.posted = len(entries)
        out.withdrawals = [ev.event_id for ev in holds]
    return out


def _identity(text: str) -> str:
    return text


def _raw_jsonb(text: str) -> Jsonb:
    """JSON text already serialised, sent as jsonb as it is (a plain str would be sent
    as a JSON string)."""
    return Jsonb(text, dumps=_identity)


_ENTRY_COLUMNS = ("key", "input_hash", "kind", "site", "order_id", "category", "currency",
                  "amount", "share", "rates", "event_at", "period_start", "adjustment",
                  "funding", "leg_accounts", "leg_amounts")
_ENTRY_TYPES = ["text", "text", "text", "text", "text", "text", "text", "int8", "int8",
                "jsonb", "timestamptz", "timestamptz", "bool", "text", "int8[]", "int8[]"]
_COPY_ENTRIES = f"COPY ledger.entries ({', '.join(_ENTRY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


async def _insert(conn: AsyncConnection, entries: list[_Entry],
                  accounts: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Write entries with their legs in ONE binary COPY; the database writes the postings
    from the legs, checks the balance and moves the account balances (ledger_0003)."""
    if not entries:
        return
    async with conn.cursor().copy(_COPY_ENTRIES) as copy:  # type: ignore[arg-type]
        copy.set_types(_ENTRY_TYPES)
        for e in entries:
            await copy.write_row((
                e.key, e.hash, e.kind, e.site, e.order_id, e.category, e.currency, e.amount,
                e.share, e.rates if isinstance(e.rates, Jsonb) else Jsonb(e.rates),
                e.event_at, e.period_start, e.adjustment, e.funding,
                [accounts[(name, e.currency)]["id"] for name, _ in e.legs],
                [amt for _, amt in e.legs]))


async def post_single(conn: AsyncConnection, *, key: str, kind: str, site: str,
                      currency: str, amount: int, legs: list[rules.Leg], rates: Rates,
                      event_at: datetime, order_id: str = "", inputs: dict[str, Any]
                      ) -> bool:
    """One entry the worker makes itself (payout, void, base fee), idempotent by ``key``.
    Returns False when it exists already with the same inputs; raises on a conflict."""
    h = rules.input_hash(**inputs)
    row = await (await conn.execute("SELECT input_hash FROM ledger.entries WHERE key = %s",
                                    (key,))).fetchone()
    if row:
        if row[0] != h:
            raise PostingError(f"entry {key} exists with other inputs")
        return False
    closed = await _site_periods(conn, [site])
    period_start, adjustment = place(rates.period, event_at, closed[site])
    accounts = await _lock_accounts(conn, {(n, currency) for n, _ in legs})
    await _insert(conn, [_Entry(key=key, hash=h, kind=kind, site=site, order_id=order_id,
                                category="", currency=currency, amount=amount, share=0,
                                rates=rates.to_json(), event_at=event_at,
                                period_start=period_start, adjustment=adjustment,
                                legs=legs)], accounts)
    return True


async def available_fen(conn: AsyncConnection, site: str, currency: str = "CNY") -> int:
    # tuple_row: callers' connections may have any row factory (the storefront's: dicts).
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT -balance FROM ledger.accounts WHERE name = %s AND currency = %s",
                      (rules.payable(site), currency))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def withdrawal_status(conn: AsyncConnection, site: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT withdrawal_id, amount, currency, status, reason, requested_at,"
                      " updated_at FROM ledger.withdrawals WHERE site = %s"
                      " ORDER BY requested_at DESC", (site,))
    return await cur.fetchall()
