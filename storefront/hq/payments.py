"""HQ's sandbox payment channel: payments a sub-site opens, a customer pays, HQ refunds."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from kameng.contracts.hq_api import PaymentRequest
from kameng.contracts.refunds import refund_action

from .site_urls import url_refusal

if TYPE_CHECKING:
    from ..state import AppState

log = logging.getLogger("kameng.storefront.hq")
Payment = dict[str, Any]  # a ``payments`` row


def announce_sandbox(state: AppState) -> None:
    """At start: say loudly whether the sandbox channel runs. Its pay page marks a payment
    paid with one unauthenticated click, so it runs only where a person enabled it
    (``KAMENG_SANDBOX_PAYMENTS=enabled``), and then the log, the metric and a banner on
    every pay page say so."""
    enabled = state.settings.sandbox_payments
    state.metrics.sandbox_payments.set(1 if enabled else 0)
    if enabled:
        log.warning(
            "SANDBOX PAYMENTS ENABLED: any visitor of a pay page can mark a payment paid"
            " without paying. Never enable this where real goods are sold.",
            extra={"setting": "KAMENG_SANDBOX_PAYMENTS"},
        )
    else:
        log.info("sandbox payment channel disabled (KAMENG_SANDBOX_PAYMENTS)")


class AmountMismatch(Exception):
    """The order already has a payment for another amount."""


class EscrowShort(Exception):
    """A wallet payment the site's escrow does not cover."""


# Advisory-lock namespace of a site's escrow: wallet payments of one site are serialised
# so two of them cannot spend one escrow (hashtext gives the per-site second key).
ESCROW_LOCK_NS = 8011


async def site_escrow_fen(conn: Any, site: str) -> int:
    """What HQ holds for ``site``'s customer wallets: paid top-ups − wallet payments not
    refunded (a refunded wallet payment went back to the customer's wallet)."""
    row = await (await conn.execute(
        "SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'topup' AND status = 'paid'), 0)"
        " - coalesce(sum(amount_fen) FILTER (WHERE kind = 'wallet' AND status = 'paid'), 0)"
        " AS escrow FROM payments WHERE site = %s AND kind <> 'order'", (site,),
    )).fetchone()
    return int(row["escrow"])


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
    async with pool.connection() as conn, conn.transaction():
        if req.kind == "wallet":
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (ESCROW_LOCK_NS, site))
            existing = await (await conn.execute(
                "SELECT 1 FROM payments WHERE site = %s AND order_id = %s",
                (site, req.order_id))).fetchone()
            if existing is None and await site_escrow_fen(conn, site) < req.amount:
                log.warning("wallet payment refused: escrow short",
                            extra={"site": site, "order": req.order_id})
                raise EscrowShort(req.order_id)
        # A wallet payment is paid when opened (the money is in escrow already) and needs
        # no notification: the site gets the answer to this very request.
        wallet = req.kind == "wallet"
        row = await (
            await conn.execute(
                "INSERT INTO payments (id, site, order_id, amount_fen, currency, notify_url,"
                " return_url, kind, status, paid_at, notified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                "  CASE WHEN %s THEN now() END, CASE WHEN %s THEN now() END)"
                " ON CONFLICT (site, order_id) DO UPDATE SET site = EXCLUDED.site"
                " RETURNING *",
                (pid, site, req.order_id, req.amount, req.currency, req.notify_url,
                 req.return_url, req.kind, "paid" if wallet else "created", wallet, wallet),
            )
        ).fetchone()
    if row["amount_fen"] != req.amount or row["kind"] != req.kind:
        raise AmountMismatch(req.order_id)
    return row


async def refund_payment(pool: AsyncConnectionPool, site: str, payment_id: str) -> bool:
    """Mark a paid payment of ``site`` refunded (idempotent). False if not refundable: by
    :func:`~kameng.contracts.refunds.refund_action`, a payment whose order got a key is
    never refunded here (that is a dispute), whatever the site asks."""
    async with pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "SELECT p.status, p.kind, EXISTS (SELECT 1 FROM card_keys k WHERE k.site = p.site"
                "   AND k.order_ref = p.order_id AND k.status = 'sold') AS key_sold"
                " FROM payments p WHERE p.id = %s AND p.site = %s FOR UPDATE",
                (payment_id, site),
            )
        ).fetchone()
        if row is None:
            return False
        if row["status"] == "refunded":
            return True
        if row["kind"] == "topup":
            # Top-up money sits in a customer's wallet at the site: it leaves through a
            # wallet payment or not at all, never back through the channel from here.
            log.warning("refund refused: a top-up", extra={"site": site, "payment": payment_id})
            return False
        if refund_action(row["status"], key_delivered=row["key_sold"]) != "refund":
            log.warning("refund refused: a key was handed out for the order",
                        extra={"site": site, "payment": payment_id})
            return False
        await conn.execute("UPDATE payments SET status = 'refunded' WHERE id = %s",
                           (payment_id,))
    return True


async def find_payment(pool: AsyncConnectionPool, site: str, order_id: str
                       ) -> Payment | None:
    """``site``'s payment of ``order_id``, if one was opened."""
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT * FROM payments WHERE site = %s AND order_id = %s", (site, order_id),
        )).fetchone()


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
