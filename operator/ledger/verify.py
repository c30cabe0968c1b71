"""`kameng ledger verify`: prove the ledger; name every difference.

1. every entry's legs sum to zero per currency, and has at least two;
2. every account's running balance equals the sum of its postings, and all balances
   together sum to zero per currency (the trial balance);
3. per site, escrow received in the ledger (channel sales − refunds + top-ups) equals HQ's
   ``payments`` table (the source of truth for money received: paid, less partial refunds
   ``refunded_fen``; a payment marked refunded counts nothing), and so do the orders paid
   from customer wallets (payments of kind ``wallet``), compared apart;
4. every closed statement re-computes to the same figures.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from . import statements


async def verify(conn: AsyncConnection, check_payments: bool = True) -> list[str]:
    """Every difference found, as sentences; empty when the ledger is right."""
    problems: list[str] = []
    for eid, cur, s, n in await (await conn.execute(
            "SELECT entry_id, currency, sum(amount), count(*) FROM ledger.postings"
            " GROUP BY 1, 2 HAVING sum(amount) <> 0 OR count(*) < 2")).fetchall():
        problems.append(f"entry {eid} is unbalanced in {cur}: legs sum to {s} ({n} legs)")
    for (eid,) in await (await conn.execute(
            "SELECT id FROM ledger.entries e WHERE NOT EXISTS"
            " (SELECT 1 FROM ledger.postings p WHERE p.entry_id = e.id)")).fetchall():
        problems.append(f"entry {eid} has no postings")
    for name, cur, bal, s in await (await conn.execute(
            "SELECT a.name, a.currency, a.balance, coalesce(sum(p.amount), 0)"
            " FROM ledger.accounts a LEFT JOIN ledger.postings p ON p.account_id = a.id"
            " GROUP BY a.id HAVING a.balance <> coalesce(sum(p.amount), 0)")).fetchall():
        problems.append(f"account {name} ({cur}) says {bal} but its postings sum to {s}")
    for cur, s in await (await conn.execute(
            "SELECT currency, sum(balance) FROM ledger.accounts GROUP BY 1"
            " HAVING sum(balance) <> 0")).fetchall():
        problems.append(f"trial balance in {cur} is off by {s}")
    if check_payments:
        has = (await (await conn.execute(
            "SELECT to_regclass('public.payments') IS NOT NULL")).fetchone())[0]  # type: ignore[index]
        if not has:
            problems.append("HQ's payments table is missing: cannot compare with money received")
        else:
            # Two sums per site: money received through the channel (orders and top-ups:
            # what entered escrow) and orders paid from customers' wallets (money already
            # in escrow, moved to the partner). A wallet payment is a ``payments`` row of
            # kind ``wallet``; counting it as received would count its top-up twice.
            rows = await (await conn.execute(
                "WITH l AS (SELECT site, currency, funding, sum(CASE kind WHEN 'refund'"
                "   THEN -amount ELSE amount END) AS fen FROM ledger.entries"
                "   WHERE kind IN ('sale', 'refund', 'topup') GROUP BY 1, 2, 3),"
                " p AS (SELECT site, currency, CASE kind WHEN 'wallet' THEN 'wallet'"
                "   ELSE 'channel' END AS funding, sum(amount_fen - refunded_fen) AS fen"
                "   FROM payments WHERE status = 'paid' GROUP BY 1, 2, 3)"
                " SELECT coalesce(l.site, p.site), coalesce(l.currency, p.currency),"
                "   coalesce(l.funding, p.funding), coalesce(l.fen, 0), coalesce(p.fen, 0)"
                " FROM l FULL JOIN p ON l.site = p.site AND l.currency = p.currency"
                "   AND l.funding = p.funding"
                " WHERE coalesce(l.fen, 0) <> coalesce(p.fen, 0) ORDER BY 1, 3")).fetchall()
            for site, cur, funding, led, paid in rows:
                what = ("received net of refunds" if funding == "channel"
                        else "paid from customer wallets net of refunds")
                problems.append(f"site {site}: ledger has {led} {cur} fen {what}, "
                                f"payments say {paid} (difference {led - paid})")
    cur_ = conn.cursor(row_factory=dict_row)
    await cur_.execute("SELECT site, period_start, figures FROM ledger.statements"
                       " ORDER BY site, period_start")
    for st in await cur_.fetchall():
        entries = await statements.period_entries(conn, st["site"], st["period_start"])
        fee = sum(int(e["amount"]) for e in entries if e["kind"] == "fee")
        opening = await statements.opening_balance(conn, st["site"], st["period_start"])
        again = statements.compute(entries, opening, fee)
        if again != st["figures"]:
            diff = sorted(k for k in again if again[k] != st["figures"].get(k))
            problems.append(f"statement {st['site']} {st['period_start']:%Y-%m-%d} does not "
                            f"re-compute: {', '.join(diff)} differ")
    return problems
