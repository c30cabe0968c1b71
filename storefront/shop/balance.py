"""The partner's money: its balance and the withdrawal rule. The one home of both.

Balance = margin (sale amount − HQ cost) of delivered orders − withdrawals not rejected.
A withdrawal needs at least the site's minimum and at most the balance; requests are
serialised by a transaction-scoped advisory lock so two of them cannot spend one balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg import AsyncConnection

from kameng.contracts.events import OrderEvent, hash_pii

from ..state import AppState
from .bus import enqueue, flush_outbox

# PostgreSQL advisory-lock key that serialises withdrawals within a site's database (each
# site has its own database, so the key only has to differ from the migration lock's).
WITHDRAWAL_LOCK_KEY = 7001

WithdrawalRefusal = Literal["below_minimum", "exceeds_balance"]


@dataclass(frozen=True)
class Withdrawal:
    """Outcome of a request: ``id`` when accepted, else ``refused`` says why."""

    id: int | None = None
    refused: WithdrawalRefusal | None = None


def withdrawal_refusal(amount: int, balance: int, minimum: int) -> WithdrawalRefusal | None:
    """The rule, pure: why ``amount`` (fen) cannot be withdrawn, or ``None`` if it can."""
    if amount < minimum:
        return "below_minimum"
    if amount > balance:
        return "exceeds_balance"
    return None


async def balance_fen(conn: AsyncConnection) -> int:
    row = await (
        await conn.execute(
            "SELECT (SELECT coalesce(sum(amount_fen - unit_cost_fen), 0) FROM orders"
            "        WHERE status = 'delivered')"
            "     - (SELECT coalesce(sum(amount_fen), 0) FROM withdrawals"
            "        WHERE status <> 'rejected') AS balance"
        )
    ).fetchone()
    return int(row["balance"])  # type: ignore[index]


async def finance_overview(state: AppState) -> tuple[int, list[dict]]:
    """Balance and the withdrawals, newest first."""
    async with state.pool.connection() as conn:
        balance = await balance_fen(conn)
        rows = await (await conn.execute("SELECT * FROM withdrawals ORDER BY id DESC")).fetchall()
    return balance, rows


async def request_withdrawal(state: AppState, amount: int, requested_by: str) -> Withdrawal:
    """Apply the rule and, if it allows, record the withdrawal and its event atomically."""
    async with state.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WITHDRAWAL_LOCK_KEY,))
        refused = withdrawal_refusal(
            amount, await balance_fen(conn), state.settings.min_withdrawal_fen
        )
        if refused:
            return Withdrawal(refused=refused)
        row = await (
            await conn.execute(
                "INSERT INTO withdrawals (amount_fen, requested_by) VALUES (%s, %s) RETURNING id",
                (amount, requested_by),
            )
        ).fetchone()
        await enqueue(
            conn,
            OrderEvent.for_order(
                "withdrawal.requested",
                site=state.site,
                order_id=f"W{row['id']}",  # type: ignore[index]
                amount=amount,
                customer=hash_pii(requested_by, state.settings.pii_pepper),
            ),
        )
    await flush_outbox(state)
    return Withdrawal(id=row["id"])  # type: ignore[index]
