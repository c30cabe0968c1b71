"""Withdrawals after their hold: pay through the provider and post, void, or keep held.

Whether a site's payouts are held is the life cycle's answer (``state_at(...)
.payouts_held``: suspended by spec or a hold, expired past grace, any hold), passed in as
``held(site)``; never a second rule here. ``None`` means the License is unknown right now
(API server away): the withdrawal waits, nothing is paid on a guess.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from kameng.payouts import PayoutProvider

from . import rules
from .repo import post_single
from .rules import Rates

log = logging.getLogger(__name__)


@dataclass
class PayoutRound:
    paid: int = 0
    voided: int = 0
    held: int = 0
    waiting: int = 0


async def settle_withdrawals(conn: AsyncConnection, provider: PayoutProvider,
                             held: Callable[[str], bool | None],
                             rates: Callable[[str], Rates | None], limit: int = 100
                             ) -> PayoutRound:
    """One round over open withdrawals, each in its own transaction (row locked with
    SKIP LOCKED, so replicas share the work and never pay one withdrawal twice)."""
    out = PayoutRound()
    seen: set[str] = set()
    for _ in range(limit):
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT * FROM ledger.withdrawals WHERE status IN ('pending', 'held')"
                " AND NOT (key = ANY(%s)) ORDER BY requested_at, key"
                " FOR UPDATE SKIP LOCKED LIMIT 1", (list(seen),))
            w = await cur.fetchone()
            if w is None:
                break
            seen.add(w["key"])
            site, r = w["site"], rates(w["site"])
            is_held = held(site)
            if is_held is None or r is None:
                out.waiting += 1
                continue
            if is_held:
                if w["status"] != "held":
                    await conn.execute("UPDATE ledger.withdrawals SET status = 'held',"
                                       " reason = 'payouts held by the license',"
                                       " updated_at = now() WHERE key = %s", (w["key"],))
                out.held += 1
                continue
            result = await provider.pay(w["key"], site, w["amount"], w["currency"])
            now = datetime.now(UTC)
            inputs = {"withdrawal": w["key"], "amount": w["amount"], "outcome": result.status}
            if result.status == "paid":
                await post_single(conn, key=f"{w['key']}:paid", kind="withdrawal.paid",
                                  site=site, currency=w["currency"], amount=w["amount"],
                                  legs=rules.paid_legs(site, w["amount"]), rates=r,
                                  event_at=now, order_id=w["withdrawal_id"], inputs=inputs)
                status, reason = "paid", ""
                out.paid += 1
            else:
                await post_single(conn, key=f"{w['key']}:void", kind="withdrawal.void",
                                  site=site, currency=w["currency"], amount=w["amount"],
                                  legs=rules.void_legs(site, w["amount"]), rates=r,
                                  event_at=now, order_id=w["withdrawal_id"], inputs=inputs)
                status, reason = "voided", result.reason
                out.voided += 1
            await conn.execute(
                "UPDATE ledger.withdrawals SET status = %s, reason = %s, provider_ref = %s,"
                " updated_at = now() WHERE key = %s",
                (status, reason, result.reference or None, w["key"]))
            log.info("withdrawal settled", extra={"site": site, "withdrawal": w["withdrawal_id"],
                                                  "status": status})
    return out
