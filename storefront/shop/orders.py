"""Sub-site order life cycle: created → paid → delivered | refunded | frozen.

Every state change and its event are written in one transaction (outbox); the event is
published right after commit and re-published by the outbox loop if Redis was away.
"""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from kameng.contracts.events import Decision, EventType, OrderEvent, hash_pii
from kameng.contracts.hq_api import NOTIFY_PATH, PaymentNotification

from ..state import AppState
from ..sweeps import sweep_forever
from .bus import enqueue, flush_outbox
from .catalog import visible_products
from .hq_client import HqError
from .payments import PaymentError

log = logging.getLogger("kameng.storefront.orders")
HOLD_ACTIONS = ("freeze", "block")


class OrderRefused(Exception):
    """The order cannot be placed; ``code`` is a message key for the customer."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def new_order_id() -> str:
    rand = base64.b32encode(secrets.token_bytes(10)).decode().rstrip("=")[:12]
    return f"K{datetime.now(UTC):%Y%m%d}{rand}"


def coupon_discount(price: int, cost: int, percent_off: int) -> int:
    """Fen off ``price``: integer arithmetic, and it can only cut into the margin, never
    the cost."""
    return min(price * percent_off // 100, price - cost)


def _event(state: AppState, order: dict[str, Any], event: EventType) -> OrderEvent:
    return OrderEvent.for_order(
        event,
        site=state.settings.site.site,
        order_id=order["id"],
        customer=order["contact_hash"],
        ip=order["ip_hash"],
        category=order["category"],
        product=order["product_id"],
        amount=order["amount_fen"],
    )


async def create_order(
    state: AppState, product_id: str, contact: str, ip: str, coupon: str | None
) -> dict[str, Any]:
    contact = contact.strip()
    if not contact or len(contact) > 200:
        raise OrderRefused("bad_request")
    if "sandbox" not in state.settings.site.payments.methods:
        # The only provider implemented; a site configured without it cannot take money.
        log.warning("no supported payment method configured", extra={"order_product": product_id})
        raise OrderRefused("unavailable_body")
    products = await visible_products(state, product_id)
    if not products:
        raise OrderRefused("not_found")
    product = products[0]
    if product.stock <= 0:
        raise OrderRefused("out_of_stock")
    pepper = state.settings.pii_pepper
    contact_hash = hash_pii(contact, pepper)
    oid = new_order_id()
    async with state.pool.connection() as conn, conn.transaction():
        blocked = await (
            await conn.execute(
                "SELECT 1 FROM blocked_contacts WHERE contact_hash = %s", (contact_hash,)
            )
        ).fetchone()
        if blocked:
            raise OrderRefused("forbidden")
        discount = 0
        code = (coupon or "").strip().upper() or None
        if code:
            row = await (
                await conn.execute(
                    "UPDATE coupons SET used = used + 1 WHERE code = %s AND active"
                    " AND used < max_uses RETURNING percent_off",
                    (code,),
                )
            ).fetchone()
            if row is None:
                raise OrderRefused("bad_request")
            discount = coupon_discount(product.price, product.cost, row["percent_off"])
        amount = product.price - discount
        order = await (
            await conn.execute(
                "INSERT INTO orders (id, product_id, category, unit_cost_fen, price_fen,"
                " discount_fen, amount_fen, coupon_code, contact_enc, contact_hash, ip_hash)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
                (
                    oid,
                    product.id,
                    product.category,
                    product.cost,
                    product.price,
                    discount,
                    amount,
                    code,
                    state.cipher.encrypt(contact, aad=oid),
                    contact_hash,
                    hash_pii(ip, pepper),
                ),
            )
        ).fetchone()
        await enqueue(conn, _event(state, order, "order.created"))
    state.metrics.orders.labels("created").inc()
    await flush_outbox(state)
    base = state.settings.public_url
    try:
        session = await state.payments.create_payment(
            oid, amount, "CNY", base + NOTIFY_PATH, f"{base}/order/{oid}"
        )
    except PaymentError as exc:
        log.warning("payment creation failed", extra={"order": oid, "error": str(exc)})
        raise OrderRefused("unavailable_body") from exc
    async with state.pool.connection() as conn:
        order = await (
            await conn.execute(
                "UPDATE orders SET payment_id = %s, pay_url = %s WHERE id = %s RETURNING *",
                (session.payment_id, session.pay_url, oid),
            )
        ).fetchone()
    return order


async def handle_notification(state: AppState, note: PaymentNotification) -> str:
    """Apply a verified payment notification. Idempotent: a replay returns ``duplicate``."""
    if note.site != state.settings.site.site or note.status != "paid":
        return "ignored"
    async with state.pool.connection() as conn, conn.transaction():
        fresh = await (
            await conn.execute(
                "INSERT INTO payment_notifications (id, order_id) VALUES (%s, %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (note.notification_id, note.order_id),
            )
        ).fetchone()
        if fresh is None:
            return "duplicate"
        order = await (
            await conn.execute("SELECT * FROM orders WHERE id = %s FOR UPDATE", (note.order_id,))
        ).fetchone()
        if order is None or order["amount_fen"] != note.amount:
            log.warning("notification does not match an order", extra={"order": note.order_id})
            raise ValueError("notification does not match an order")
        if order["status"] != "created":
            return "unchanged"
        held = order["risk_action"] in HOLD_ACTIONS
        order = await (
            await conn.execute(
                "UPDATE orders SET status = %s, paid_at = now(), payment_id = %s"
                " WHERE id = %s RETURNING *",
                ("frozen" if held else "paid", note.payment_id, note.order_id),
            )
        ).fetchone()
        await enqueue(conn, _event(state, order, "order.paid"))
    state.metrics.orders.labels("paid").inc()
    await flush_outbox(state)
    if not held:
        await deliver(state, note.order_id)
    return "paid"


async def deliver(state: AppState, order_id: str) -> str:
    """Ask HQ for the key of a paid order and store it encrypted. Returns the new status."""
    order = await find_order(state, order_id)
    if order is None or order["status"] != "paid" or order["risk_action"] in HOLD_ACTIONS:
        return order["status"] if order else "missing"
    try:
        secret = (await state.hq.fulfil(order_id, order["product_id"])).secret
    except HqError as exc:
        if exc.status == 409:  # out of stock: the customer gets their money back
            return await refund(state, order_id, reason="out_of_stock")
        if exc.status is None:
            log.warning("fulfilment unreachable", extra={"order": order_id, "error": str(exc)})
        else:
            log.warning("fulfilment refused", extra={"order": order_id, "status": exc.status})
        return "paid"
    async with state.pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "UPDATE orders SET status = 'delivered', key_enc = %s, delivered_at = now()"
                " WHERE id = %s AND status = 'paid' RETURNING *",
                (state.cipher.encrypt(secret, aad=order_id), order_id),
            )
        ).fetchone()
        if row is None:  # frozen or refunded meanwhile: HQ keeps the key bound to this order
            return "held"
        await enqueue(conn, _event(state, row, "order.delivered"))
    state.metrics.orders.labels("delivered").inc()
    await flush_outbox(state)
    return "delivered"


async def refund(state: AppState, order_id: str, reason: str) -> str:
    order = await find_order(state, order_id)
    if order is None or order["status"] not in ("paid", "delivered", "frozen"):
        return order["status"] if order else "missing"
    await state.payments.refund(order["payment_id"])
    async with state.pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "UPDATE orders SET status = 'refunded', refunded_at = now() WHERE id = %s"
                " AND status IN ('paid', 'delivered', 'frozen') RETURNING *",
                (order_id,),
            )
        ).fetchone()
        if row is None:
            return "unchanged"
        await enqueue(conn, _event(state, row, "order.refunded"))
    log.info("order refunded", extra={"order": order_id, "reason": reason})
    state.metrics.orders.labels("refunded").inc()
    await flush_outbox(state)
    return "refunded"


async def apply_decision(state: AppState, decision: Decision) -> None:
    """``freeze``/``block`` hold delivery; ``allow`` releases a hold and delivers."""
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "UPDATE orders SET risk_action = %s, risk_rule = %s,"
                " status = CASE WHEN %s AND status = 'paid' THEN 'frozen'"
                "               WHEN %s = 'allow' AND status = 'frozen' THEN 'paid'"
                "               ELSE status END"
                " WHERE id = %s RETURNING status",
                (
                    decision.action,
                    decision.rule,
                    decision.action in HOLD_ACTIONS,
                    decision.action,
                    decision.order_id,
                ),
            )
        ).fetchone()
    if row is None:
        return
    log.info(
        "risk decision applied",
        extra={"order": decision.order_id, "action": decision.action, "rule": decision.rule},
    )
    if row["status"] == "paid":
        await deliver(state, decision.order_id)


async def delivery_sweeper(state: AppState, interval: float = 10.0) -> None:
    """Retry delivery of paid orders whose fulfilment failed transiently."""
    await sweep_forever(
        state, interval,
        "SELECT id FROM orders WHERE status = 'paid' AND (risk_action IS NULL"
        " OR risk_action NOT IN ('freeze', 'block'))"
        " AND paid_at < now() - interval '5 seconds' LIMIT 50",
        lambda st, row: deliver(st, row["id"]), "delivery")


async def find_order(state: AppState, order_id: str) -> dict[str, Any] | None:
    async with state.pool.connection() as conn:
        return await (
            await conn.execute("SELECT * FROM orders WHERE id = %s", (order_id,))
        ).fetchone()


def revealed_key(state: AppState, order: dict[str, Any]) -> str | None:
    """The card key a customer may see: only once the order is delivered."""
    if order["status"] == "delivered" and order["key_enc"]:
        return state.cipher.decrypt(order["key_enc"], aad=order["id"])
    return None


async def lookup_order(state: AppState, order_id: str, contact: str) -> bool:
    """Whether ``contact`` placed ``order_id`` (how a customer without the session finds it)."""
    contact_hash = hash_pii(contact, state.settings.pii_pepper)
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id FROM orders WHERE id = %s AND contact_hash = %s",
                (order_id, contact_hash),
            )
        ).fetchone()
    return row is not None

