"""Sub-site order life cycle: created → paid → delivered | refunded | frozen.

Every state change and its event are written in one transaction (outbox); the event is
published right after commit and re-published by the outbox loop if Redis was away.

Money rules, each in one place:

- What a refund request may do is :func:`kameng.contracts.refunds.refund_action` (after
  delivery it opens a dispute, never a refund).
- Only one worker of any replica acts on an order's money at a time: it *claims* the order
  with a conditional UPDATE (:func:`_claim`) and every later write checks the claim.
- Every paid order ends delivered or refunded: a final refusal by HQ refunds at once, a
  transient one is retried with backoff up to a cap and then refunded
  (:func:`after_failure`); the sweep takes due orders the longest-waiting first and skips
  rows another replica holds, so failing rows never starve the others.
- A coupon use is counted when the order is paid, never more than allowed; an order whose
  coupon ran out meanwhile is refunded.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection, sql

from kameng.api.common import REGION_RE
from kameng.contracts.events import Decision, EventType, OrderEvent, hash_pii
from kameng.contracts.hq_api import NOTIFY_PATH, PaymentNotification
from kameng.contracts.refunds import REFUNDABLE_STATUSES, refund_action

from ..state import AppState
from ..sweeps import sweep_forever
from .bus import enqueue, flush_outbox, publish_committed
from .catalog import visible_products
from .hq_client import HqError
from .payments import PaymentError
from .plans import has_feature
from .wallet import Customer, WalletRefused
from .wallet import credit as wallet_credit
from .wallet import debit as wallet_debit

log = logging.getLogger("kameng.storefront.orders")
HOLD_ACTIONS = ("freeze", "block")
RISK_BLOCKED = "risk_blocked"  # refund reason of an order risk (or a reviewer) blocked
# How long a claim on an order lasts: longer than the slowest HQ call (30 s timeout), so
# a live worker never loses it mid-call; a crashed worker's claim runs out after this. (A
# claim that runs out early costs a second HQ call at most, never a second key: HQ binds
# one key per order and only the claim's token may mark the order delivered.)
CLAIM_SECONDS = 45
RETRY_CAP_SECONDS = 600.0
# HQ refusals worth retrying: HQ away or overloaded, credentials or license being renewed,
# resumed or rotated. Any other refusal (out of stock, out of the license's scope, unknown
# product, ...) is final: the buyer is refunded at once.
_TRANSIENT_CODES = frozenset({
    "unauthenticated", "license_invalid", "license_suspended", "license_readOnly",
    "license_superseded", "license_expired",
})


@dataclass(frozen=True)
class Retry:
    delay: float


@dataclass(frozen=True)
class Refund:
    reason: str


def is_transient(status: int | None, code: str) -> bool:
    """Whether an HQ answer may change by itself (``status`` None: HQ not reached)."""
    return status is None or status >= 500 or status == 429 or code in _TRANSIENT_CODES


def after_failure(status: int | None, code: str, attempts: int, max_attempts: int,
                  base_seconds: float) -> Retry | Refund:
    """What to do with a paid order after its ``attempts``-th failed delivery: a final
    refusal refunds; a transient one is retried after ``base·2^(attempts-1)`` seconds
    (capped), until ``max_attempts`` failures, then refunds: nobody waits forever."""
    if not is_transient(status, code):
        return Refund(f"refused:{code or status}")
    if attempts >= max_attempts:
        return Refund(f"gave_up:{code or status or 'unreachable'}")
    return Retry(min(base_seconds * 2 ** max(attempts - 1, 0), RETRY_CAP_SECONDS))


class OrderRefused(Exception):
    """The order cannot be placed; ``code`` is a message key for the customer."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def new_order_id() -> str:
    rand = base64.b32encode(secrets.token_bytes(10)).decode().rstrip("=")[:12]
    return f"K{datetime.now(UTC):%Y%m%d}{rand}"


_REGION = re.compile(REGION_RE)


def order_region(product_region: str, chosen: str) -> str:
    """The buyer's region of an order: where the card or top-up is for.

    A card platform knows it from the buyer, at checkout: the region of the game server or
    phone number being topped up. The buyer has no reason to lie — a card for the wrong
    region does not work for them — unlike the IP address, which in China mostly says
    which carrier's national egress the request came through. A regional product is only
    usable in its own region, so that is the order's region and any other choice is
    refused; for a product usable anywhere the buyer's choice stands (ISO 3166-2, the
    License's vocabulary), and an order without one carries "" (unknown)."""
    chosen = chosen.strip().upper()
    if not chosen:
        return product_region
    if len(chosen) > 6 or not _REGION.match(chosen):
        raise OrderRefused("bad_request")
    if product_region and chosen != product_region:
        raise OrderRefused("bad_request")
    return chosen


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
        region=order["region"],
        amount=order["amount_fen"],
        funding=order["paid_via"],
    )


async def create_order(
    state: AppState, product_id: str, contact: str, ip: str, coupon: str | None,
    wallet_customer: Customer | None = None, region: str = "",
) -> dict[str, Any]:
    """Place an order. Paid through HQ's channel (the row has ``pay_url``), or, with
    ``wallet_customer``, from that customer's wallet at once (:func:`pay_from_wallet`; the
    contact is then the account's e-mail, so risk sees one customer)."""
    if wallet_customer is not None:
        contact = wallet_customer.email
    contact = contact.strip()
    if not contact or len(contact) > 200:
        raise OrderRefused("bad_request")
    if wallet_customer is None and "sandbox" not in state.settings.site.payments.methods:
        # The only provider implemented; a site configured without it cannot take money.
        log.warning("no supported payment method configured", extra={"order_product": product_id})
        raise OrderRefused("unavailable_body")
    products = await visible_products(state, product_id)
    if not products:
        raise OrderRefused("not_found")
    product = products[0]
    if product.stock <= 0:
        raise OrderRefused("out_of_stock")
    region = order_region(product.region, region)
    pepper = state.settings.pii_pepper
    contact_hash = hash_pii(contact, pepper)
    oid = new_order_id()
    code = (coupon or "").strip().upper() or None
    ip_hash, paid_via = hash_pii(ip, pepper), "wallet" if wallet_customer else "channel"
    session = None
    async with state.pool.connection() as conn, conn.transaction():
        if code and not has_feature(state, "marketing"):
            raise OrderRefused("bad_request")  # coupons are a plan feature (tiered rights)
        # Pipelined (one round trip each): the two checks, then the order and its event.
        async with conn.pipeline():
            blocked_cur = await conn.execute(
                "SELECT 1 FROM blocked_contacts WHERE contact_hash = %s", (contact_hash,))
            # Only checked here: the use is counted when the order is paid, so unpaid
            # orders can never use a coupon up.
            coupon_cur = await conn.execute(
                "SELECT percent_off FROM coupons WHERE code = %s AND active"
                " AND used < max_uses", (code,)) if code else None
        if await blocked_cur.fetchone():
            raise OrderRefused("forbidden")
        discount = 0
        if coupon_cur is not None:
            row = await coupon_cur.fetchone()
            if row is None:
                raise OrderRefused("bad_request")
            discount = coupon_discount(product.price, product.cost, row["percent_off"])
        amount = product.price - discount
        if wallet_customer is None:
            # Opened before the row is written, so the order and its pay URL land together;
            # HQ's sandbox signs a pay link here, without a call (see SandboxProvider).
            base = state.settings.public_url
            try:
                session = await state.payments.create_payment(
                    oid, amount, "CNY", base + NOTIFY_PATH, f"{base}/order/{oid}")
            except PaymentError as exc:
                log.warning("payment creation failed", extra={"order": oid, "error": str(exc)})
                raise OrderRefused("unavailable_body") from exc
        # The event carries only what this insert writes, so it is built before it and
        # leaves in the same round trip.
        created = _event(state, {"id": oid, "contact_hash": contact_hash, "ip_hash": ip_hash,
                                 "category": product.category, "product_id": product.id,
                                 "amount_fen": amount, "paid_via": paid_via,
                                 "region": region},
                         "order.created")
        async with conn.pipeline():
            order_cur = await conn.execute(
                "INSERT INTO orders (id, product_id, category, unit_cost_fen, price_fen,"
                " discount_fen, amount_fen, coupon_code, contact_enc, contact_hash, ip_hash,"
                " paid_via, customer_id, region, payment_id, pay_url)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
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
                    ip_hash,
                    paid_via,
                    wallet_customer.id if wallet_customer else None,
                    region,
                    session.payment_id if session else None,
                    session.pay_url if session else None,
                ),
            )
            await enqueue(conn, created)
        order = await order_cur.fetchone()
    state.metrics.orders.labels("created").inc()
    await publish_committed(state, created)
    if wallet_customer is not None:
        await pay_from_wallet(state, oid, wallet_customer)
    return order


async def _use_coupon(conn: AsyncConnection, code: str) -> bool:
    """Count one use of ``code`` if one is left: one conditional UPDATE, so concurrent
    payments never count more uses than allowed."""
    row = await (
        await conn.execute(
            "UPDATE coupons SET used = used + 1 WHERE code = %s AND used < max_uses"
            " RETURNING used",
            (code,),
        )
    ).fetchone()
    return row is not None


async def handle_notification(state: AppState, note: PaymentNotification) -> str:
    """Apply a verified payment notification. Idempotent: a replay returns ``duplicate``.

    ``paid``: the order is paid and committed; its delivery is the caller's next step
    (:func:`deliver`), done after HQ has its answer: HQ's notification does not wait on
    the fulfilment call back to HQ (and were that step lost, the delivery sweep takes the
    order: it is due from the moment it is paid)."""
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
        # A wallet-paid order has no payment at HQ: a notification for it is not ours.
        if order is None or order["amount_fen"] != note.amount or order["paid_via"] != "channel":
            log.warning("notification does not match an order", extra={"order": note.order_id})
            raise ValueError("notification does not match an order")
        if order["status"] != "created":
            return "unchanged"
        order, paid = await _mark_paid(state, conn, order, note.payment_id)
    state.metrics.orders.labels("paid").inc()
    await publish_committed(state, paid)
    return "paid"


async def _mark_paid(state: AppState, conn: AsyncConnection, order: dict[str, Any],
                     payment_id: str) -> tuple[dict[str, Any], OrderEvent]:
    """``created`` → ``paid`` (or ``frozen`` when risk holds it) with its ``order.paid``
    event, inside the caller's transaction with the order row locked: the one step every
    way of paying shares."""
    held = order["risk_action"] in HOLD_ACTIONS
    coupon_used = bool(order["coupon_code"]) and await _use_coupon(conn, order["coupon_code"])
    # Paid at a discount no longer available (the last use went to an order paid
    # first): the buyer gets the money back rather than the coupon being overused.
    refund_reason = (
        "coupon_used_up" if order["coupon_code"] and not coupon_used else None
    )
    if order["risk_action"] == "block":
        # Blocked by risk before the money arrived: it goes straight back.
        refund_reason = refund_reason or RISK_BLOCKED
    order = await (
        await conn.execute(
            "UPDATE orders SET status = %s, paid_at = now(), payment_id = %s,"
            " coupon_used = %s, refund_reason = %s, next_attempt_at = now()"
            " WHERE id = %s RETURNING *",
            ("frozen" if held and not refund_reason else "paid", payment_id,
             coupon_used, refund_reason, order["id"]),
        )
    ).fetchone()
    paid = _event(state, order, "order.paid")
    await enqueue(conn, paid)
    return order, paid


async def pay_from_wallet(state: AppState, order_id: str, customer: Customer) -> str:
    """Pay a created order from the customer's wallet: the debit, the order's change to
    paid and its ``order.paid`` event (``funding=wallet``) commit together or not at all.
    Raises :class:`~.wallet.WalletRefused` (``insufficient_balance``); delivers after."""
    async with state.pool.connection() as conn, conn.transaction():
        order = await (
            await conn.execute(
                "SELECT * FROM orders WHERE id = %s AND customer_id = %s"
                " AND paid_via = 'wallet' FOR UPDATE", (order_id, customer.id),
            )
        ).fetchone()
        if order is None:
            raise WalletRefused("not_found")
        if order["status"] != "created":
            return order["status"]
        await wallet_debit(conn, customer.id, order["amount_fen"], order_id)
        # HQ records the payment against the site's escrow (it hands out keys only against
        # money it holds). Asked while the debit is uncommitted and the wallet row locked:
        # a refusal rolls the debit back; a retry gets the same payment (one per order).
        base = state.settings.public_url
        try:
            session = await state.payments.create_payment(
                order_id, order["amount_fen"], "CNY", base + NOTIFY_PATH,
                f"{base}/order/{order_id}", kind="wallet")
        except PaymentError as exc:
            log.warning("wallet payment refused by HQ",
                        extra={"order": order_id, "status": exc.status, "code": exc.code})
            raise WalletRefused("unavailable_body") from exc
        order, paid = await _mark_paid(state, conn, order, session.payment_id)
    state.metrics.orders.labels("paid").inc()
    await publish_committed(state, paid)
    if order["status"] == "paid":
        return await deliver(state, order_id)
    return order["status"]


async def _claim(conn: AsyncConnection, order_id: str, statuses: tuple[str, ...]
                 ) -> dict[str, Any] | None:
    """Take the order for one worker if it is in ``statuses`` and nobody holds it. The
    row, with its fresh ``claim_token``, or None: another worker (maybe in another
    replica) is on it, or the order moved on."""
    return await (
        await conn.execute(
            "UPDATE orders SET claim_token = %s,"
            " claimed_until = now() + make_interval(secs => %s)"
            " WHERE id = %s AND status = ANY(%s)"
            " AND (claimed_until IS NULL OR claimed_until < now()) RETURNING *",
            (secrets.token_hex(12), CLAIM_SECONDS, order_id, list(statuses)),
        )
    ).fetchone()


# The sweep's claim: due paid orders (and held ones whose refund is due), longest-waiting
# first, skipping rows another replica is claiming right now (SKIP LOCKED) or holds
# (claimed_until), each with its own token.
_CLAIM_DUE = """
UPDATE orders o SET claim_token = md5(random()::text || o.id),
                    claimed_until = now() + make_interval(secs => %(claim)s)
FROM (
    SELECT id FROM orders
    WHERE status IN ('paid', 'frozen')
      -- a held order waits for its risk decision, unless it is to be refunded anyway
      AND (refund_reason IS NOT NULL OR (status = 'paid'
           AND (risk_action IS NULL OR risk_action NOT IN ('freeze', 'block'))))
      AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY next_attempt_at, id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
) due
WHERE o.id = due.id
RETURNING o.*
"""


async def claim_due(conn: AsyncConnection, batch: int = 50) -> list[dict[str, Any]]:
    """Claim up to ``batch`` paid orders whose next attempt is due (the delivery sweep)."""
    return await (await conn.execute(_CLAIM_DUE, {"claim": CLAIM_SECONDS, "batch": batch})
                  ).fetchall()


async def _release(state: AppState, order: dict[str, Any], **changes: Any) -> None:
    """Give the claim back, writing ``changes`` (only while the claim is still ours)."""
    sets = sql.SQL("").join(
        sql.SQL(", {} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
    )
    async with state.pool.connection() as conn:
        await conn.execute(
            sql.SQL("UPDATE orders SET claim_token = NULL, claimed_until = NULL{}"
                    " WHERE id = %(id)s AND claim_token = %(token)s").format(sets),
            {**changes, "id": order["id"], "token": order["claim_token"]},
        )


async def deliver(state: AppState, order_id: str) -> str:
    """Deliver a paid order now, unless another worker holds it. Returns the status."""
    async with state.pool.connection() as conn:
        order = await _claim(conn, order_id, ("paid",))
    if order is None:
        current = await find_order(state, order_id)
        if current is None:
            return "missing"
        return "busy" if current["status"] == "paid" else current["status"]
    return await process_claimed(state, order)


async def process_claimed(state: AppState, order: dict[str, Any]) -> str:
    """Drive a claimed paid order one step: refund it if a refund is due, else deliver.
    An unexpected failure (the database gone mid-step, say) gives the claim back for a
    retry shortly, where it can: else the order waited for the claim to run out."""
    try:
        return await _process_claimed(state, order)
    except Exception:
        with contextlib.suppress(Exception):  # the database may still be away
            await _release(state, order, next_attempt_at=datetime.now(UTC) + timedelta(
                seconds=state.settings.delivery_retry_seconds))
        raise


async def _process_claimed(state: AppState, order: dict[str, Any]) -> str:
    if order["refund_reason"]:
        return await _refund_claimed(state, order, order["refund_reason"])
    if order["risk_action"] in HOLD_ACTIONS:
        await _release(state, order)
        return "held"
    try:
        secret = (await state.hq.fulfil(order["id"], order["product_id"])).secret
    except HqError as exc:
        return await _delivery_failed(state, order, exc.status, exc.code)
    except ValueError:  # an answer that is not the contract's (a gateway's page): retry
        return await _delivery_failed(state, order, None, "bad_response")
    async with state.pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "UPDATE orders SET status = 'delivered', key_enc = %s, delivered_at = now(),"
                " claim_token = NULL, claimed_until = NULL, last_error = NULL"
                " WHERE id = %s AND status = 'paid' AND claim_token = %s RETURNING *",
                (state.cipher.encrypt(secret, aad=order["id"]), order["id"],
                 order["claim_token"]),
            )
        ).fetchone()
        if row is None:  # frozen meanwhile: HQ keeps the key bound to this order
            await _release(state, order)
            return "held"
        delivered = _event(state, row, "order.delivered")
        await enqueue(conn, delivered)
    state.metrics.orders.labels("delivered").inc()
    await publish_committed(state, delivered)
    return "delivered"


async def _delivery_failed(state: AppState, order: dict[str, Any], status: int | None,
                           code: str) -> str:
    attempts = order["attempts"] + 1
    settings = state.settings
    step = after_failure(status, code, attempts, settings.delivery_max_attempts,
                         settings.delivery_retry_seconds)
    log.warning(
        "fulfilment failed",
        extra={"order": order["id"], "status": status, "code": code,
               "attempts": attempts, "next": type(step).__name__.lower()},
    )
    error = (code or str(status or "unreachable"))[:64]
    if isinstance(step, Refund):
        async with state.pool.connection() as conn:
            await conn.execute(
                "UPDATE orders SET attempts = %s, last_error = %s, refund_reason = %s"
                " WHERE id = %s AND claim_token = %s",
                (attempts, error, step.reason, order["id"], order["claim_token"]),
            )
        return await _refund_claimed(state, {**order, "attempts": attempts}, step.reason)
    await _release(state, order, attempts=attempts, last_error=error,
                   next_attempt_at=datetime.now(UTC) + timedelta(seconds=step.delay))
    return "paid"


RefundResult = Literal["refunded", "refund_pending", "disputed", "busy", "missing", "none"]


async def refund(state: AppState, order_id: str, reason: str, by: str = "system"
                 ) -> RefundResult | str:
    """A refund request (back office): whatever the rule allows for the order's state.

    Before delivery the buyer is refunded; after delivery a dispute is recorded for HQ to
    decide and no money moves. Returns what happened (or the unchanged status)."""
    order = await find_order(state, order_id)
    if order is None:
        return "missing"
    action = refund_action(order["status"])
    if action == "dispute":
        return await open_dispute(state, order_id, reason, by)
    if action == "none":
        return order["status"]
    async with state.pool.connection() as conn:
        claimed = await _claim(conn, order_id, REFUNDABLE_STATUSES)
        if claimed is None:
            return "busy"  # a delivery is in flight: its outcome decides, ask again after
        await conn.execute(
            "UPDATE orders SET refund_reason = %s WHERE id = %s AND claim_token = %s",
            (reason[:200], order_id, claimed["claim_token"]),
        )
    return await _refund_claimed(state, claimed, reason)


async def _refund_claimed(state: AppState, order: dict[str, Any], reason: str
                          ) -> RefundResult:
    """Refund a claimed, undelivered order. ``refund_reason`` is already stored, so if the
    payment channel fails the sweep retries the refund (never a delivery). A wallet-paid
    order is refunded at HQ too (the money returns to the site's escrow) and then to the
    customer's wallet, in the same transaction as the status change (once per order id)."""
    try:
        await state.payments.refund(order["payment_id"])
    except PaymentError as exc:
        attempts = order["attempts"] + 1
        delay = min(state.settings.delivery_retry_seconds * 2 ** min(attempts, 16),
                    RETRY_CAP_SECONDS)
        log.error("refund failed, will retry",
                  extra={"order": order["id"], "status": exc.status, "code": exc.code,
                         "attempts": attempts})
        changes: dict[str, Any] = {}
        if exc.status == 409:
            # HQ refuses because a key left for this order (its answer to us was lost): the
            # rule makes that a delivery, so the next attempt fetches the same key.
            changes["refund_reason"] = None
        await _release(state, order, attempts=attempts,
                       last_error=(f"refund:{exc.code or exc.status or 'unreachable'}")[:64],
                       next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay), **changes)
        return "refund_pending"
    async with state.pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                "UPDATE orders SET status = 'refunded', refunded_at = now(),"
                " claim_token = NULL, claimed_until = NULL"
                " WHERE id = %s AND status = ANY(%s) AND claim_token = %s"
                " RETURNING *",
                (order["id"], list(REFUNDABLE_STATUSES), order["claim_token"]),
            )
        ).fetchone()
        if row is None:
            return "busy"
        if row["paid_via"] == "wallet":
            await wallet_credit(conn, row["customer_id"], row["amount_fen"], "refund", row["id"])
        await enqueue(conn, _event(state, row, "order.refunded"))
    log.info("order refunded", extra={"order": order["id"], "reason": reason})
    state.metrics.orders.labels("refunded").inc()
    await flush_outbox(state)
    return "refunded"


async def open_dispute(state: AppState, order_id: str, reason: str, by: str) -> RefundResult:
    """Record a refund request on a delivered order for HQ to decide (idempotent): a row in
    ``order_disputes`` and, once, an ``order.disputed`` event on the site's stream, which is
    how HQ learns of it. No money moves and the key stays the buyer's until HQ decides."""
    async with state.pool.connection() as conn, conn.transaction():
        fresh = await (
            await conn.execute(
                "INSERT INTO order_disputes (order_id, reason, opened_by) VALUES (%s, %s, %s)"
                " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
                (order_id, reason[:200], by[:200]),
            )
        ).fetchone()
        if fresh is not None:
            order = await (
                await conn.execute("SELECT * FROM orders WHERE id = %s", (order_id,))
            ).fetchone()
            await enqueue(conn, _event(state, order, "order.disputed"))
    if fresh is not None:
        log.warning("refund after delivery refused: dispute opened for HQ",
                    extra={"order": order_id, "by": by})
        state.metrics.orders.labels("disputed").inc()
        await flush_outbox(state)
    return "disputed"


async def apply_decision(state: AppState, decision: Decision) -> None:
    """``freeze``/``block`` hold delivery; ``allow`` releases a hold and delivers."""
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "UPDATE orders SET risk_action = %s, risk_rule = %s,"
                " status = CASE WHEN %s AND status = 'paid' THEN 'frozen'"
                "               WHEN %s = 'allow' AND status = 'frozen' THEN 'paid'"
                "               ELSE status END,"
                # A block of a paid, undelivered order refunds it (the refund rule's
                # statuses; the sweep drives the refund through the one refund path).
                " refund_reason = CASE WHEN %s = 'block' AND status = ANY(%s)"
                "                      THEN coalesce(refund_reason, %s)"
                "                      ELSE refund_reason END,"
                " next_attempt_at = coalesce(next_attempt_at, now())"
                " WHERE id = %s RETURNING status",
                (
                    decision.action,
                    decision.rule,
                    decision.action in HOLD_ACTIONS,
                    decision.action,
                    decision.action,
                    list(REFUNDABLE_STATUSES),
                    RISK_BLOCKED,
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


async def delivery_sweeper(state: AppState) -> None:
    """Re-drive paid orders: retries of transient failures, refunds that are due, and
    orders whose worker died. Runs whatever the license says (a suspended shop still
    refunds its buyers), in every replica: the claim splits the work between them."""
    await sweep_forever(state, state.settings.delivery_sweep_seconds, claim_due,
                        process_claimed, "delivery")


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

