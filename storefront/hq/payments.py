"""HQ's sandbox payment channel: payments a sub-site opens, a customer pays, HQ refunds."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from kameng.contracts.hq_api import PaymentRequest

from .site_urls import url_refusal

Payment = dict[str, Any]  # a ``payments`` row


class AmountMismatch(Exception):
    """The order already has a payment for another amount."""


class BadSiteUrl(Exception):
    """``notify_url`` or ``return_url`` is not on the site's registered public URL."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


async def open_payment(pool: AsyncConnectionPool, site: str, req: PaymentRequest,
                       registered_urls: Sequence[str]) -> Payment:
    """The order's payment, created on first call (a retry returns the same payment).
    Its notify and return URLs must lie on ``registered_urls``, the site's own."""
    for name in ("notify_url", "return_url"):
        reason = url_refusal(getattr(req, name), registered_urls)
        if reason is not None:
            raise BadSiteUrl(name, reason)
    pid = "P" + secrets.token_hex(10)
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO payments (id, site, order_id, amount_fen, currency, notify_url,"
                " return_url) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (site, order_id) DO UPDATE SET site = EXCLUDED.site"
                " RETURNING *",
                (pid, site, req.order_id, req.amount, req.currency, req.notify_url,
                 req.return_url),
            )
        ).fetchone()
    if row["amount_fen"] != req.amount:
        raise AmountMismatch(req.order_id)
    return row


async def refund_payment(pool: AsyncConnectionPool, site: str, payment_id: str) -> bool:
    """Mark a paid payment of ``site`` refunded (idempotent). False if not refundable."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE payments SET status = 'refunded' WHERE id = %s AND site = %s"
            " AND status IN ('paid', 'refunded')",
            (payment_id, site),
        )
    return bool(cur.rowcount)


async def get_payment(pool: AsyncConnectionPool, payment_id: str) -> Payment | None:
    async with pool.connection() as conn:
        return await (
            await conn.execute("SELECT * FROM payments WHERE id = %s", (payment_id,))
        ).fetchone()


async def confirm_payment(pool: AsyncConnectionPool, payment_id: str) -> Payment | None:
    """The customer paid: ``created`` → ``paid``. Returns the payment whatever its status."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "UPDATE payments SET status = 'paid', paid_at = now()"
                " WHERE id = %s AND status = 'created' RETURNING *",
                (payment_id,),
            )
        ).fetchone()
    return row or await get_payment(pool, payment_id)
