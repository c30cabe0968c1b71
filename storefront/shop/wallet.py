"""Customer accounts and their wallet: the one home of the wallet's money rules.

- A balance is integer fen and never below zero: the database refuses it (CHECK on
  ``wallets``), and a debit is one conditional UPDATE on the wallet row, locked first, so
  concurrent payments from one wallet queue on the row and the loser sees the new balance.
- Every movement is a row of ``wallet_movements`` (immutable, trigger) with an
  idempotency key (:func:`movement_key`: the top-up's payment id, the order id): the same
  money can move once, whatever is replayed or retried.
- A top-up is a payment through HQ's channel (:data:`TOPUP_PREFIX` names it there); the
  balance rises only when HQ's signed notification says paid, and a ``topup`` event
  announces it in the same transaction (outbox).
- Paying from the wallet and refunding to it live with the order's state change in
  :mod:`.orders`, which calls :func:`debit` and :func:`credit` inside its transaction.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.errors import LockNotAvailable, UniqueViolation

from kameng.contracts.events import OrderEvent, hash_pii
from kameng.contracts.hq_api import NOTIFY_PATH, PaymentNotification
from kameng.contracts.money import MoneyError, to_fen

from ..crypto import hash_password, verify_password
from ..state import AppState
from ..web.staff import PASSWORD_MAX, password_problem
from .bus import enqueue, flush_outbox
from .payments import PaymentError

log = logging.getLogger("kameng.storefront.wallet")

# Top-up ids start with T (order ids with K): the payment notification path tells the two
# apart by it, and HQ's channel needs no second kind of payment.
TOPUP_PREFIX = "T"
TOPUP_MIN_FEN = 100  # ¥1: below, the channel's fee is more than the money
TOPUP_MAX_FEN = 500_000  # ¥5,000 per top-up: a bound on what one click can move
CUSTOMER_SESSION_TTL = timedelta(days=7)
WALLET_LOCK_WAIT_MS = 10_000  # longest wait for a busy wallet (HQ's call takes ≤ 10 s)
EMAIL_MAX = 200

MovementKind = Literal["topup", "payment", "refund"]
TopupRefusal = Literal["topup_invalid", "topup_too_small", "topup_too_large"]
TOPUP_REFUSALS: tuple[str, ...] = TopupRefusal.__args__  # type: ignore[attr-defined]


class WalletRefused(Exception):
    """A wallet operation refused; ``code`` is a locale key for the customer."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- pure rules -------------------------------------------------------------------------

def movement_key(kind: MovementKind, ref: str) -> str:
    """The idempotency key of a movement: one top-up per payment id, one payment and one
    refund per order id."""
    return f"{kind}:{ref}"


def topup_amount(text: str) -> int | TopupRefusal:
    """Fen of a top-up typed as yuan (``"50"``, ``"12.50"``), or why it is refused."""
    try:
        fen = to_fen(text.strip())
    except MoneyError:
        return "topup_invalid"
    if fen < TOPUP_MIN_FEN:
        return "topup_too_small"
    if fen > TOPUP_MAX_FEN:
        return "topup_too_large"
    return fen


def debit_refusal(balance_fen: int, amount_fen: int) -> str | None:
    """Why ``amount_fen`` cannot be paid from ``balance_fen`` (a locale key), or None. The
    database enforces the same (CHECK and the conditional UPDATE); this is the message."""
    if amount_fen <= 0:
        return "bad_request"
    if amount_fen > balance_fen:
        return "insufficient_balance"
    return None


def is_topup_id(ref: str) -> bool:
    return ref.startswith(TOPUP_PREFIX)


def new_topup_id() -> str:
    rand = base64.b32encode(secrets.token_bytes(10)).decode().rstrip("=")[:12]
    return f"{TOPUP_PREFIX}{datetime.now(UTC):%Y%m%d}{rand}"


def normal_email(email: str) -> str:
    return email.strip().lower()


def signup_problem(email: str, password: str, confirm: str) -> str | None:
    """Locale key of what is wrong with a sign-up, ``None`` if it is acceptable (the
    password rule is the staff's, one home)."""
    if not email or len(email) > EMAIL_MAX or "@" not in email or any(c.isspace() for c in email):
        return "email_invalid"
    if password != confirm:
        return "password_mismatch"
    return password_problem(password, email)


# --- accounts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    id: int
    email: str


async def sign_up(state: AppState, email: str, password: str, confirm: str) -> Customer:
    """A new account with an empty wallet; raises :class:`WalletRefused`."""
    email = normal_email(email)
    problem = signup_problem(email, password, confirm)
    if problem:
        raise WalletRefused(problem)
    pw = hash_password(password)
    async with state.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "INSERT INTO customers (email, password_hash) VALUES (%s, %s)"
            " ON CONFLICT (email) DO NOTHING RETURNING id", (email, pw),
        )).fetchone()
        if row is None:
            raise WalletRefused("email_taken")
        await conn.execute("INSERT INTO wallets (customer_id) VALUES (%s)", (row["id"],))
    return Customer(row["id"], email)


async def authenticate(state: AppState, email: str, password: str) -> Customer | None:
    email = normal_email(email)
    if len(password) > PASSWORD_MAX:
        return None
    async with state.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT id, password_hash FROM customers WHERE email = %s", (email,)
        )).fetchone()
    # verify_password(None, …) still spends the hashing time: no timing hint of who exists.
    if not verify_password(row["password_hash"] if row else None, password) or row is None:
        return None
    return Customer(row["id"], email)


async def customer_by_session(state: AppState, id_hash: str) -> Customer | None:
    async with state.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT c.id, c.email FROM customer_sessions s JOIN customers c"
            " ON c.id = s.customer_id WHERE s.id_hash = %s AND s.expires_at > now()",
            (id_hash,),
        )).fetchone()
    return Customer(row["id"], row["email"]) if row else None


# --- movements (inside the caller's transaction) ----------------------------------------

async def _already(conn: AsyncConnection[Any], key: str) -> bool:
    return await (await conn.execute(
        "SELECT 1 FROM wallet_movements WHERE idem_key = %s", (key,)
    )).fetchone() is not None


async def credit(conn: AsyncConnection[Any], customer_id: int, amount_fen: int,
                 kind: MovementKind, ref: str) -> bool:
    """Add money (top-up, refund) once per key. False: this key already moved money.
    Must run inside the caller's transaction (the row lock lasts until its commit)."""
    key = movement_key(kind, ref)
    await conn.execute("SELECT 1 FROM wallets WHERE customer_id = %s FOR UPDATE",
                       (customer_id,))
    if await _already(conn, key):
        return False
    row = await (await conn.execute(
        "UPDATE wallets SET balance_fen = balance_fen + %s, updated_at = now()"
        " WHERE customer_id = %s RETURNING balance_fen", (amount_fen, customer_id),
    )).fetchone()
    if row is None:
        raise LookupError(f"no wallet for customer {customer_id}")
    await conn.execute(
        "INSERT INTO wallet_movements (customer_id, kind, amount_fen, balance_after_fen,"
        " idem_key, ref) VALUES (%s, %s, %s, %s, %s, %s)",
        (customer_id, kind, amount_fen, row["balance_fen"], key, ref),
    )
    return True


async def debit(conn: AsyncConnection[Any], customer_id: int, amount_fen: int, ref: str
                ) -> int:
    """Take ``amount_fen`` for order ``ref`` once; returns the new balance. Raises
    :class:`WalletRefused` (``insufficient_balance``, ``duplicate``). The wallet row is
    locked first, so concurrent debits queue and each sees the balance the previous left;
    the UPDATE's condition and the CHECK make overdrawing impossible even so."""
    key = movement_key("payment", ref)
    # Payments of one wallet queue on its row, each holding a pooled connection while it
    # waits: the bound keeps one customer's burst from holding the pool for long.
    await conn.execute(f"SET LOCAL lock_timeout = '{WALLET_LOCK_WAIT_MS}ms'")
    try:
        locked = await (await conn.execute(
            "SELECT balance_fen FROM wallets WHERE customer_id = %s FOR UPDATE", (customer_id,)
        )).fetchone()
    except LockNotAvailable:
        raise WalletRefused("wallet_busy") from None
    if locked is None:
        raise WalletRefused("insufficient_balance")
    if await _already(conn, key):
        raise WalletRefused("duplicate")
    refused = debit_refusal(locked["balance_fen"], amount_fen)
    if refused:
        raise WalletRefused(refused)
    row = await (await conn.execute(
        "UPDATE wallets SET balance_fen = balance_fen - %s, updated_at = now()"
        " WHERE customer_id = %s AND balance_fen >= %s RETURNING balance_fen",
        (amount_fen, customer_id, amount_fen),
    )).fetchone()
    if row is None:
        raise WalletRefused("insufficient_balance")
    await conn.execute(
        "INSERT INTO wallet_movements (customer_id, kind, amount_fen, balance_after_fen,"
        " idem_key, ref) VALUES (%s, 'payment', %s, %s, %s, %s)",
        (customer_id, -amount_fen, row["balance_fen"], key, ref),
    )
    return int(row["balance_fen"])


# --- top-ups ----------------------------------------------------------------------------

async def open_topup(state: AppState, customer: Customer, amount_text: str, ip: str) -> str:
    """Open a top-up payment through HQ's channel; returns the pay URL."""
    amount = topup_amount(amount_text)
    if isinstance(amount, str):
        raise WalletRefused(amount)
    if "sandbox" not in state.settings.site.payments.methods:
        raise WalletRefused("unavailable_body")
    tid = new_topup_id()
    base = state.settings.public_url
    try:
        session = await state.payments.create_payment(
            tid, amount, "CNY", base + NOTIFY_PATH, f"{base}/account", kind="topup"
        )
    except PaymentError as exc:
        log.warning("top-up payment creation failed", extra={"topup": tid, "error": str(exc)})
        raise WalletRefused("unavailable_body") from exc
    # Written with its pay URL: a customer who pays finds the top-up (a notification for
    # an id not written yet is refused, and HQ sends it again).
    async with state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO topups (id, customer_id, amount_fen, ip_hash, payment_id, pay_url)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (tid, customer.id, amount, hash_pii(ip, state.settings.pii_pepper),
             session.payment_id, session.pay_url),
        )
    return session.pay_url


async def handle_topup_notification(state: AppState, note: PaymentNotification) -> str:
    """Apply HQ's verified notification for a top-up: the balance rises once, with a
    ``topup`` event in the same transaction. ``duplicate``/``unchanged`` on a replay;
    :class:`ValueError` when it matches no top-up (amount included)."""
    if note.site != state.settings.site.site or note.status != "paid":
        return "ignored"
    try:
        async with state.pool.connection() as conn, conn.transaction():
            fresh = await (await conn.execute(
                "INSERT INTO payment_notifications (id, order_id) VALUES (%s, %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (note.notification_id, note.order_id),
            )).fetchone()
            if fresh is None:
                return "duplicate"
            topup = await (await conn.execute(
                "SELECT t.*, c.email FROM topups t JOIN customers c ON c.id = t.customer_id"
                " WHERE t.id = %s FOR UPDATE OF t", (note.order_id,),
            )).fetchone()
            if topup is None or topup["amount_fen"] != note.amount:
                log.warning("notification does not match a top-up",
                            extra={"topup": note.order_id})
                raise ValueError("notification does not match a top-up")
            if topup["status"] != "created":
                return "unchanged"
            await conn.execute(
                "UPDATE topups SET status = 'paid', paid_at = now(), payment_id = %s"
                " WHERE id = %s", (note.payment_id, topup["id"]),
            )
            if not await credit(conn, topup["customer_id"], topup["amount_fen"], "topup",
                                note.payment_id):
                return "unchanged"
            await enqueue(conn, OrderEvent.for_order(
                "topup", site=state.settings.site.site, order_id=topup["id"],
                customer=hash_pii(topup["email"], state.settings.pii_pepper),
                ip=topup["ip_hash"], amount=topup["amount_fen"], funding="channel",
            ))
    except UniqueViolation:  # a concurrent replay won the idempotency key
        return "duplicate"
    state.metrics.orders.labels("topup").inc()
    await flush_outbox(state)
    return "paid"


# --- what people see --------------------------------------------------------------------

async def wallet_of(state: AppState, customer_id: int, limit: int = 50
                    ) -> tuple[int, list[dict[str, Any]]]:
    """Balance and the latest movements, newest first."""
    async with state.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT balance_fen FROM wallets WHERE customer_id = %s", (customer_id,)
        )).fetchone()
        moves = await (await conn.execute(
            "SELECT kind, amount_fen, balance_after_fen, ref, created_at FROM wallet_movements"
            " WHERE customer_id = %s ORDER BY id DESC LIMIT %s", (customer_id, limit),
        )).fetchall()
    return (int(row["balance_fen"]) if row else 0), moves


async def wallets_overview(state: AppState, limit: int = 200) -> list[dict[str, Any]]:
    """Back office: every account's balance, movements count and last movement."""
    async with state.pool.connection() as conn:
        return await (await conn.execute(
            "SELECT c.id, c.email, w.balance_fen, count(m.id) AS movements,"
            " max(m.created_at) AS last_movement FROM customers c"
            " JOIN wallets w ON w.customer_id = c.id"
            " LEFT JOIN wallet_movements m ON m.customer_id = c.id"
            " GROUP BY c.id, c.email, w.balance_fen ORDER BY c.id DESC LIMIT %s", (limit,),
        )).fetchall()
