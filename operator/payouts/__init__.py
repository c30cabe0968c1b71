"""Payout providers: how HQ sends a partner's withdrawal out. An interface and a sandbox.

A provider must be idempotent by ``key`` (the withdrawal's event id): the worker calls it
inside the transaction that holds the withdrawal's row lock and posts the outcome; when the
worker dies after the provider paid but before its commit, the next attempt calls again
with the same key and must get the same answer, never a second transfer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from psycopg import AsyncConnection


@dataclass(frozen=True)
class PayoutResult:
    status: Literal["paid", "refused"]
    reference: str = ""
    reason: str = ""


class PayoutProvider(Protocol):
    async def pay(self, key: str, site: str, amount: int, currency: str) -> PayoutResult: ...


class SandboxPayoutProvider:
    """A provider for development and tests, like the payment sandbox: it moves no money,
    keeps every transfer in its own table (``payout_sandbox.transfers``, keyed by the
    idempotency key) and refuses amounts above ``limit_fen`` the way a bank refuses an
    over-limit transfer, so the void path is exercised too."""

    def __init__(self, conn_factory, limit_fen: int = 5_000_000_00) -> None:
        self._connect = conn_factory
        self.limit_fen = limit_fen

    @staticmethod
    async def setup(conn: AsyncConnection) -> None:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS payout_sandbox")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS payout_sandbox.transfers ("
            " key text PRIMARY KEY, site text NOT NULL, amount bigint NOT NULL,"
            " currency text NOT NULL, status text NOT NULL, reference text NOT NULL,"
            " reason text NOT NULL DEFAULT '', at timestamptz NOT NULL DEFAULT now())")

    async def pay(self, key: str, site: str, amount: int, currency: str) -> PayoutResult:
        # Its own connection and autocommit: a bank's record survives the caller's rollback.
        async with await self._connect() as conn:
            await conn.set_autocommit(True)
            status, reason = ("paid", "") if amount <= self.limit_fen else (
                "refused", f"over the sandbox limit of {self.limit_fen} fen")
            await conn.execute(
                "INSERT INTO payout_sandbox.transfers (key, site, amount, currency, status,"
                " reference, reason) VALUES (%s, %s, %s, %s, %s, 'sbx-' || md5(%s), %s)"
                " ON CONFLICT (key) DO NOTHING",
                (key, site, amount, currency, status, key, reason))
            row = await (await conn.execute(
                "SELECT status, reference, reason FROM payout_sandbox.transfers WHERE key = %s",
                (key,))).fetchone()
        return PayoutResult(status=row[0], reference=row[1], reason=row[2])  # type: ignore[index]
