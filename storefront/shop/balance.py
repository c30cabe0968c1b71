"""The partner's money: its balance and the withdrawal rule. The one home of both.

Balance = margin (sale amount − HQ cost) of delivered orders − withdrawals not rejected.
A withdrawal needs at least the site's minimum and at most the balance; requests are
serialised by a transaction-scoped advisory lock so two of them cannot spend one balance.

Above the RolePolicy's limit (``SiteConfig.needs_hq_approval``) a withdrawal is held:
recorded ``awaiting_approval`` (so its amount is reserved: it counts against the balance
like any withdrawal not rejected) and sent to HQ as an approval request
(:mod:`.requests`). Only when HQ approves does it become ``requested`` and its event leave
the shop — once, by a conditional update in the event's transaction; a rejection releases
the reservation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from psycopg import AsyncConnection

from kameng.contracts.events import OrderEvent, hash_pii

from ..state import AppState
from .bus import enqueue, flush_outbox

WITHDRAW_ACTION = "finance:withdraw"

# PostgreSQL advisory-lock key that serialises withdrawals within a site's database (each
# site has its own database, so the key only has to differ from the migration lock's).
WITHDRAWAL_LOCK_KEY = 7001

WithdrawalRefusal = Literal["below_minimum", "exceeds_balance"]


@dataclass(frozen=True)
class Withdrawal:
    """Outcome of a request: ``id`` when accepted, else ``refused`` says why."""

    id: int | None = None
    refused: WithdrawalRefusal | None = None
    # Held for HQ's approval (above the RolePolicy's limit); the amount is reserved.
    awaiting_approval: bool = False


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
    """Apply the rule and, if it allows, record the withdrawal and its event atomically —
    or, above the approval limit, record it held for HQ (no event yet) and ask HQ."""
    held = state.settings.site.needs_hq_approval(WITHDRAW_ACTION, amount)
    async with state.pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WITHDRAWAL_LOCK_KEY,))
        refused = withdrawal_refusal(
            amount, await balance_fen(conn), state.settings.min_withdrawal_fen
        )
        if refused:
            return Withdrawal(refused=refused)
        if held:
            row = await (
                await conn.execute(
                    "INSERT INTO withdrawals (amount_fen, requested_by, status, approval_key)"
                    " VALUES (%s, %s, 'awaiting_approval', %s) RETURNING id",
                    (amount, requested_by, secrets.token_urlsafe(24)),
                )
            ).fetchone()
        else:
            row = await (
                await conn.execute(
                    "INSERT INTO withdrawals (amount_fen, requested_by) VALUES (%s, %s)"
                    " RETURNING id",
                    (amount, requested_by),
                )
            ).fetchone()
            await _requested_event(state, conn, row["id"], amount, requested_by)  # type: ignore[index]
    if held:
        return Withdrawal(id=row["id"], awaiting_approval=True)  # type: ignore[index]
    await flush_outbox(state)
    return Withdrawal(id=row["id"])  # type: ignore[index]


async def _requested_event(state: AppState, conn: AsyncConnection, wid: int, amount: int,
                           requested_by: str) -> None:
    await enqueue(
        conn,
        OrderEvent.for_order(
            "withdrawal.requested",
            site=state.site,
            order_id=f"W{wid}",
            amount=amount,
            customer=hash_pii(requested_by, state.settings.pii_pepper),
        ),
    )


async def held_withdrawals(state: AppState) -> list[dict]:
    """Withdrawals waiting for HQ's decision, oldest first."""
    async with state.pool.connection() as conn:
        return await (await conn.execute(
            "SELECT id, amount_fen, requested_by, approval_key FROM withdrawals"
            " WHERE status = 'awaiting_approval' ORDER BY id")).fetchall()


async def release_held_withdrawal(state: AppState, wid: int, approved: bool,
                                  approval_id: str) -> bool:
    """HQ decided a held withdrawal: approved → ``requested`` and its event (exactly once:
    the conditional update and the event share a transaction, so a second call, another
    replica or a restart finds nothing to do); rejected → ``rejected`` (the reservation is
    released). Returns whether this call made the change."""
    async with state.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "UPDATE withdrawals SET status = %s, approval_id = %s"
            " WHERE id = %s AND status = 'awaiting_approval'"
            " RETURNING id, amount_fen, requested_by",
            ("requested" if approved else "rejected", approval_id[:64], wid))).fetchone()
        if row is not None and approved:
            await _requested_event(state, conn, row["id"], row["amount_fen"],
                                   row["requested_by"])
    if row is not None and approved:
        await flush_outbox(state)
    return row is not None
