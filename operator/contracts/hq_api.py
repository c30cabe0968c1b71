"""HQ ⇄ sub-site HTTP contract: paths, headers, bodies and the notification signature.

Both sides import this module; HQ never imports the sub-site's client and the sub-site
never spells a path or header itself.

* A sub-site calls HQ with three headers (:func:`site_headers`): ``Authorization: Bearer
  <site API token>`` (:mod:`kameng.contracts.hq_auth`), ``X-Kameng-Site`` and, for calls
  that need a license in force, ``X-Kameng-License`` (the signed license token).
* HQ answers errors as ``{"error": <code>}`` (:class:`ApiError`).
* A payment notification is an HTTP POST from HQ to the sub-site's :data:`NOTIFY_PATH`,
  a JSON :class:`PaymentNotification` with headers ``X-Kameng-Timestamp: <unix seconds>``
  and ``X-Kameng-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<body>")>``, key =
  :func:`kameng.contracts.hq_auth.notification_key` of the site's API token's digest. The
  timestamp is signed, so a captured notification cannot be re-dated; the receiver refuses
  stale ones (:data:`TOLERANCE_SECONDS`) and records ``notification_id`` so a replay inside
  the window changes nothing.
* A customer pays an order (or a top-up) on HQ's pay page through a **pay link** the site
  signs itself (:func:`sign_payment_link`, key
  :func:`kameng.contracts.hq_auth.payment_link_key`): the :class:`PaymentLink` — the
  payment request, the site, an expiry — travels in the URL (:data:`PAY_LINK_PATH`), and
  HQ opens the payment when the link is first followed. Checkout needs no call to HQ, so an
  order costs the site one HQ round trip (fulfilment) besides HQ's notification. A wallet
  payment is still a call (:data:`PAYMENTS_PATH`): HQ answers it from the site's escrow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .money import MAX_FEN

__all__ = [
    "AUTHORIZATION",
    "CATALOG_CHANNEL",
    "CATALOG_CURRENCY",
    "CATALOG_PATH",
    "FULFIL_PATH",
    "LICENSE_HEADER",
    "NOTIFY_PATH",
    "PAYMENTS_PATH",
    "PAYMENT_KINDS",
    "PAY_LINK_PATH",
    "PAY_LINK_SECONDS",
    "PAY_PAGE_PATH",
    "REFUND_PATH",
    "SIGNATURE_HEADER",
    "SITE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_SECONDS",
    "ApiError",
    "Catalog",
    "CatalogProduct",
    "FulfilRequest",
    "Fulfilment",
    "LinkError",
    "NotificationError",
    "PaymentCreated",
    "PaymentKind",
    "PaymentLink",
    "PaymentNotification",
    "PaymentRequest",
    "bearer_token",
    "notification_headers",
    "pay_link_path",
    "pay_page_path",
    "refund_path",
    "sign_notification",
    "sign_payment_link",
    "site_headers",
    "verify_notification",
    "verify_payment_link",
]

# --- paths (HQ serves the first five, the sub-site the last) ------------------------------
CATALOG_PATH = "/api/v1/catalog"
FULFIL_PATH = "/api/v1/fulfil"
PAYMENTS_PATH = "/api/v1/payments"
REFUND_PATH = "/api/v1/payments/{pid}/refund"
# The site's money at HQ: available balance, withdrawal outcomes, statements (GET);
# one statement as CSV (GET, ``{period}`` = the period's first day, YYYY-MM-DD).
SETTLEMENT_PATH = "/api/v1/settlement"
STATEMENT_CSV_PATH = "/api/v1/settlement/statements/{period}.csv"
PAY_PAGE_PATH = "/pay/{pid}"
PAY_LINK_PATH = "/pay/link/{token}"
# How long a pay link opens a payment: a day, like a card platform's unpaid-order window.
PAY_LINK_SECONDS = 24 * 3600
NOTIFY_PATH = "/api/payments/notify"

# --- headers ------------------------------------------------------------------------------
AUTHORIZATION = "Authorization"
SITE_HEADER = "X-Kameng-Site"
LICENSE_HEADER = "X-Kameng-License"
TIMESTAMP_HEADER = "X-Kameng-Timestamp"
SIGNATURE_HEADER = "X-Kameng-Signature"

TOLERANCE_SECONDS = 300

# The currency of HQ's catalogue (products' cost): what a payment must be in for HQ to
# hand out a key.
CATALOG_CURRENCY = "CNY"

# Redis pub/sub channel on which HQ announces a catalogue change (sub-sites also poll).
CATALOG_CHANNEL = "kameng:catalog"


def refund_path(payment_id: str) -> str:
    return REFUND_PATH.format(pid=payment_id)


def pay_page_path(payment_id: str) -> str:
    return PAY_PAGE_PATH.format(pid=payment_id)


def pay_link_path(token: str) -> str:
    return PAY_LINK_PATH.format(token=token)


def site_headers(site: str, api_token: str, license_token: str | None = None) -> dict[str, str]:
    """Headers of every sub-site → HQ call; the license header only where one is given."""
    headers = {AUTHORIZATION: f"Bearer {api_token}", SITE_HEADER: site}
    if license_token is not None:
        headers[LICENSE_HEADER] = license_token
    return headers


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` value ('' if not a bearer)."""
    return authorization.removeprefix("Bearer ").strip() if authorization.startswith(
        "Bearer "
    ) else ""


# --- bodies -------------------------------------------------------------------------------


class _Body(BaseModel):
    # Lax like the hand-written parsing it replaces: ids may arrive as numbers.
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # What no database column can hold is malformed input (a 400), not a 500 later:
        # PostgreSQL text refuses NUL, bigint stops at MAX_FEN.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("NUL character")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_FEN:
            raise ValueError("number out of range")
        return value


class ApiError(_Body):
    error: str


class CatalogProduct(_Body):
    """One product of HQ's catalogue. Money is integer fen (cost = HQ's price to sites)."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, coerce_numbers_to_str=True
    )
    id: str
    name_zh: str = Field(alias="nameZh")
    name_en: str = Field(alias="nameEn")
    category: str
    region: str = ""
    face_value: int = Field(alias="faceValue")
    cost: int
    stock: int
    active: bool


class Catalog(_Body):
    products: list[CatalogProduct]

    def to_json(self) -> bytes:
        """Compact, deterministic bytes: HQ's ETag is a hash of them."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def etag(self) -> str:
        return '"' + hashlib.sha256(self.to_json()).hexdigest()[:32] + '"'


# What a payment pays for. ``order``: a customer pays an order through the channel.
# ``topup``: a customer pays money into their wallet at the site; HQ holds it in escrow for
# the site and never hands a key out against it. ``wallet``: an order paid from a wallet;
# HQ records it paid at once if the site's escrow (paid top-ups − wallet payments not
# refunded) covers it, so a key still leaves HQ only against money HQ holds.
PaymentKind = Literal["order", "topup", "wallet"]
PAYMENT_KINDS: tuple[str, ...] = PaymentKind.__args__  # type: ignore[attr-defined]


class PaymentRequest(_Body):
    order_id: str
    amount: int = Field(gt=0)  # fen
    currency: str = "CNY"
    notify_url: str
    return_url: str
    kind: PaymentKind = "order"  # absent from older sites' requests: an order payment


class PaymentLink(PaymentRequest):
    """What a pay link carries: the site's payment request, whose it is, until when."""

    site: str
    expires: int  # unix seconds

    @field_validator("kind")
    @classmethod
    def _paid_by_a_customer(cls, kind: str) -> str:
        # A wallet payment spends escrow HQ must check first: never opened by a link.
        if kind == "wallet":
            raise ValueError("a wallet payment is not opened by a link")
        return kind


class PaymentCreated(_Body):
    payment_id: str
    pay_url: str


class FulfilRequest(_Body):
    order_id: str
    product_id: str


class Fulfilment(_Body):
    order_id: str
    key_id: int
    secret: str


class WithdrawalOutcome(_Body):
    """What became of a withdrawal at HQ: ``pending`` (on hold, not paid yet), ``held``
    (payouts held by the license), ``paid`` or ``voided`` (``reason`` says why)."""

    withdrawal_id: str
    amount: int
    currency: str = "CNY"
    status: Literal["pending", "held", "paid", "voided"]
    reason: str = ""


class StatementSummary(_Body):
    period_start: str  # YYYY-MM-DD
    period_end: str
    closed: bool
    net_payable: int
    closing: int


class SettlementView(_Body):
    """``GET SETTLEMENT_PATH``: the site's money as HQ's ledger has it (fen)."""

    currency: str = "CNY"
    available: int
    withdrawals: list[WithdrawalOutcome]
    statements: list[StatementSummary]


class NotificationError(ValueError):
    """Refused notification (bad signature, stale, malformed)."""


class PaymentNotification(_Body):
    notification_id: str
    payment_id: str
    site: str
    order_id: str
    amount: int
    currency: str = "CNY"
    status: str

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":")).encode()


# --- notification signature ----------------------------------------------------------------


def sign_notification(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def notification_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    return {
        "content-type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign_notification(secret, ts, body),
    }


def verify_notification(
    secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> PaymentNotification:
    """The notification if ``headers`` (lower-case names) sign ``body`` recently enough."""
    now = time.time() if now is None else now
    try:
        ts = int(headers.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError as exc:
        raise NotificationError("missing or bad timestamp") from exc
    expected = sign_notification(secret, ts, body)
    if not hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER.lower(), "")):
        raise NotificationError("bad signature")
    if abs(now - ts) > TOLERANCE_SECONDS:
        raise NotificationError("stale timestamp")
    try:
        data: Any = json.loads(body)
        return PaymentNotification.model_validate(data)
    except ValueError as exc:  # JSON and validation errors alike
        raise NotificationError("malformed body") from exc


# --- pay links -----------------------------------------------------------------------------


class LinkError(ValueError):
    """A pay link HQ must not open: ``reason`` is ``malformed``, ``unknown_site``,
    ``bad_signature`` or ``expired`` (never echoes the link)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _link_mac(key: str, payload: str) -> str:
    return _b64(hmac.new(key.encode(), b"v1." + payload.encode(), hashlib.sha256).digest())


def sign_payment_link(key: str, link: PaymentLink) -> str:
    """The URL-safe token of ``link``: ``<base64url JSON>.<base64url HMAC-SHA256>``."""
    payload = _b64(json.dumps(link.model_dump(mode="json"), separators=(",", ":")).encode())
    return f"{payload}.{_link_mac(key, payload)}"


def verify_payment_link(token: str, key_of: Callable[[str], str | None],
                        now: float | None = None) -> PaymentLink:
    """The link ``token`` carries, if the key ``key_of(site)`` signed it and it has not
    expired. The site named inside picks the key; nothing else is believed before the
    signature is checked."""
    payload, _, mac = token.partition(".")
    try:
        site = json.loads(_unb64(payload)).get("site")
    except (ValueError, AttributeError) as exc:
        raise LinkError("malformed") from exc
    key = key_of(site) if isinstance(site, str) else None
    if key is None:
        raise LinkError("unknown_site")
    if not hmac.compare_digest(_link_mac(key, payload), mac):
        raise LinkError("bad_signature")
    try:
        link = PaymentLink.model_validate_json(_unb64(payload))
    except ValueError as exc:
        raise LinkError("malformed") from exc
    if link.expires < (time.time() if now is None else now):
        raise LinkError("expired")
    return link


# --- approvals (RolePolicy.spec.approvals) --------------------------------------------------
#
# A partner's staff ask for a change of their SubSite in the back office; the shop sends
# it to HQ (``POST APPROVALS_PATH``, the site's token; ``request_key`` makes a retry the same
# request) and lists its requests (``GET APPROVALS_PATH``). HQ applies a change to the
# SubSite only once it is approved (at once when the site's RolePolicy does not list the
# kind). HQ's staff decide in the back office, ``kubectl kameng approvals|approve|reject``
# through ``ADMIN_APPROVALS_PATH`` with HQ's admin API token in ``ADMIN_TOKEN_HEADER`` (a
# header of its own: the API server's service proxy does not forward ``Authorization``).

APPROVALS_PATH = "/api/v1/approvals"
ADMIN_APPROVALS_PATH = "/api/v1/admin/approvals"
ADMIN_DECISION_PATH = "/api/v1/admin/approvals/{rid}/{decision}"
ADMIN_TOKEN_HEADER = "X-Kameng-Admin-Token"  # noqa: S105 - a header name

ApprovalStatus = Literal["pending", "approved", "rejected", "applied", "failed"]
Decision = Literal["approve", "reject"]
# The SubSite fields a back office may ask to change (kameng.api.permissions.APPROVABLE
# minus the storefront actions), and the staff permission each request needs.
CHANGE_PERMISSIONS: dict[str, str] = {
    "payments.methods": "settings:write",
    "domain": "settings:write",
    "catalog.priceRules": "catalog:write",
    "catalog.hiddenProducts": "catalog:write",
    "members": "members:manage",
}


# The storefront money actions (the rest of APPROVABLE) a back office asks HQ for when the
# amount is above the RolePolicy's approvalLimits (SiteConfig.needs_hq_approval). HQ only
# decides them: the shop holds the action (a withdrawal's amount reserved, a refund not
# made), re-sends the request with its request_key until it is decided, makes it exactly
# once on ``approved`` and drops it on ``rejected``. ``approved`` is their final status.
ACTION_PERMISSIONS: dict[str, str] = {
    "finance:withdraw": "finance:withdraw",
    "orders:refund": "orders:refund",
}


class MoneyAction(BaseModel):
    """``change`` of an action request: the amount and what it is about (``W<id>`` of a
    withdrawal, the order id of a refund), so HQ's reviewer sees what they approve."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    amount_fen: int = Field(alias="amountFen", gt=0, le=MAX_FEN)
    reference: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def admin_decision_path(request_id: str, decision: str) -> str:
    return ADMIN_DECISION_PATH.format(rid=request_id, decision=decision)


class ChangeRequest(_Body):
    """``POST APPROVALS_PATH``: ``change`` holds the new value of the field, camelCase as
    in the SubSite (``{"methods": [...]}``, ``{"domain": "..."}``, ``{"priceRules": [...]}``,
    ``{"hiddenProducts": [...]}``, ``{"members": [...]}`` — the whole list)."""

    request_key: str = Field(min_length=8, max_length=64)
    kind: str
    change: dict[str, Any]
    requested_by: str = Field(max_length=254)
    note: str = Field(default="", max_length=1000)


class ApprovalView(_Body):
    id: str
    site: str
    kind: str
    change: dict[str, Any]
    requested_by: str
    requested_at: str
    note: str = ""
    status: ApprovalStatus
    decided_by: str = ""
    decided_at: str = ""
    decision_reason: str = ""
    applied_at: str = ""
    error: str = ""


class ApprovalList(_Body):
    requests: list[ApprovalView]


class DecisionRequest(_Body):
    by: str = Field(min_length=1, max_length=254)
    reason: str = Field(default="", max_length=2000)


def normalise_change(kind: str, change: Mapping[str, Any]) -> dict[str, Any]:
    """The change as it is stored and shown: only the field's key, its value as the
    SubSite holds it (validated by :func:`change_patch`)."""
    if kind in ACTION_PERMISSIONS:
        action = MoneyAction.model_validate(dict(change))
        return {"amountFen": action.amount_fen, "reference": action.reference}
    spec = change_patch(kind, change)["spec"]
    key = kind.split(".")[-1]
    value = spec.get(key) if key in spec else next(iter(spec.values()))[key]
    # PostgreSQL's jsonb cannot hold NUL. Escaped backslashes are dropped first, so a
    # literal backslash followed by "u0000" (text a partner may type) is not taken for one.
    if "\\u0000" in json.dumps(value).replace("\\\\", ""):
        raise ValueError("NUL character")
    return {key: value}


def change_patch(kind: str, change: Mapping[str, Any]) -> dict[str, Any]:
    """The SubSite merge patch a change becomes, validated by the SubSite's own models
    (so a bad value is refused when it is asked for, not when it is approved). Raises
    ``ValueError`` with a message a person understands."""
    from kameng.api.common import DNS_SUBDOMAIN_RE, PERCENT_RE
    from kameng.api.subsite import Catalog, Member, Payments

    if kind not in CHANGE_PERMISSIONS:
        raise ValueError(f"unknown change {kind!r}; one of {', '.join(CHANGE_PERMISSIONS)}")
    if kind == "payments.methods":
        spec: dict[str, Any] = {"payments": Payments.model_validate(
            {"methods": change.get("methods")}).model_dump(by_alias=True)}
    elif kind == "domain":
        # The CRD's rule for spec.domain: a DNS subdomain with at least one dot.
        domain = str(change.get("domain", "")).strip().lower()
        if not (re.match(DNS_SUBDOMAIN_RE, domain) and "." in domain and len(domain) <= 253):
            raise ValueError("domain must be a host name such as shop.example.com")
        spec = {"domain": domain}
    elif kind == "catalog.priceRules":
        cat = Catalog.model_validate({"priceRules": change.get("priceRules")})
        for r in cat.price_rules:  # the CRD's CEL rule, which the model does not run
            if not re.match(PERCENT_RE, r.markup_percent) or float(r.markup_percent) > 500:
                raise ValueError("markupPercent must be a decimal string from \"0\" to "
                                 "\"500\" (a sale price is never below HQ cost)")
        spec = {"catalog": {"priceRules": cat.model_dump(by_alias=True)["priceRules"]}}
    elif kind == "catalog.hiddenProducts":
        cat = Catalog.model_validate({"hiddenProducts": change.get("hiddenProducts")})
        spec = {"catalog": {"hiddenProducts": cat.model_dump(by_alias=True)["hiddenProducts"]}}
    else:
        members = [Member.model_validate(m).model_dump(by_alias=True, exclude_none=True)
                   for m in change.get("members") or []]
        if not members or len(members) > 64:
            raise ValueError("members must list 1 to 64 members")
        spec = {"members": members}
    return {"spec": spec}


# --- support tickets (sub-site → HQ; the site's API token, no license needed) -------------
# A partner's staff open a ticket in their back office; the shop sends it here. HQ routes
# it by category to a team, answers in its back office, and the partner reads the thread
# back through the same API. A site sees only its own tickets: HQ filters by the site the
# token authenticates, never by anything in the body.
TICKETS_PATH = "/api/v1/tickets"  # GET: the site's tickets; POST: open one (TicketCreate)
TICKET_PATH = "/api/v1/tickets/{tid}"  # GET: one ticket with its thread (TicketView)
TICKET_MESSAGES_PATH = "/api/v1/tickets/{tid}/messages"  # POST: the partner replies
TICKET_ATTACHMENT_PATH = "/api/v1/tickets/{tid}/attachments/{aid}"  # GET: one attachment

TicketCategory = Literal["payments", "settlement", "fulfilment", "catalog", "technical",
                         "account", "other"]
TICKET_CATEGORIES: tuple[str, ...] = TicketCategory.__args__  # type: ignore[attr-defined]
TicketPriority = Literal["urgent", "high", "normal", "low"]
TICKET_PRIORITIES: tuple[str, ...] = TicketPriority.__args__  # type: ignore[attr-defined]
TicketStatus = Literal["open", "answered", "closed"]

# Attachments: a few small files of types a browser shows without running anything.
# Bounded here so both sides refuse the same thing (the shop before sending, HQ for real).
MAX_ATTACHMENTS = 3
MAX_ATTACHMENT_BYTES = 2 << 20  # 2 MiB each, before base64
ATTACHMENT_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "application/pdf",
                                     "text/plain")
MAX_TICKET_TEXT = 8000
MAX_TICKET_SUBJECT = 200


# Magic numbers of the binary types: the declared type must match the content, so a script
# named .png is refused (HQ's staff open these files). Text must be UTF-8.
_ATTACHMENT_MAGIC: dict[str, bytes] = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "application/pdf": b"%PDF-",
}


def attachment_refusal(content_type: str, data: bytes) -> str | None:
    """Why a ticket attachment is refused (an API error code), or None: the one rule the
    shop applies before sending and HQ applies for real."""
    if len(data) > MAX_ATTACHMENT_BYTES:
        return "attachment_too_large"
    if content_type not in ATTACHMENT_TYPES:
        return "attachment_type"
    magic = _ATTACHMENT_MAGIC.get(content_type)
    if magic is not None and not data.startswith(magic):
        return "attachment_type"
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "attachment_type"
    return None


def ticket_path(tid: int | str) -> str:
    return TICKET_PATH.format(tid=tid)


def ticket_messages_path(tid: int | str) -> str:
    return TICKET_MESSAGES_PATH.format(tid=tid)


def ticket_attachment_path(tid: int | str, aid: int | str) -> str:
    return TICKET_ATTACHMENT_PATH.format(tid=tid, aid=aid)


class TicketAttachmentIn(_Body):
    """One file as the shop sends it: name, declared type and base64 content."""

    filename: str = Field(min_length=1, max_length=120)
    content_type: str
    data_b64: str = Field(max_length=(MAX_ATTACHMENT_BYTES * 4) // 3 + 8)

    @field_validator("content_type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value not in ATTACHMENT_TYPES:
            raise ValueError("attachment type not allowed")
        return value


class TicketCreate(_Body):
    category: TicketCategory
    priority: TicketPriority = "normal"
    subject: str = Field(min_length=1, max_length=MAX_TICKET_SUBJECT)
    text: str = Field(min_length=1, max_length=MAX_TICKET_TEXT)
    author: str = Field(min_length=1, max_length=200)  # the partner staff member's e-mail
    attachments: list[TicketAttachmentIn] = Field(default_factory=list,
                                                  max_length=MAX_ATTACHMENTS)


class TicketReply(_Body):
    text: str = Field(min_length=1, max_length=MAX_TICKET_TEXT)
    author: str = Field(min_length=1, max_length=200)
    attachments: list[TicketAttachmentIn] = Field(default_factory=list,
                                                  max_length=MAX_ATTACHMENTS)


class TicketAttachmentInfo(_Body):
    id: int
    filename: str
    content_type: str
    size: int


class TicketMessage(_Body):
    id: int
    side: Literal["site", "hq"]
    author: str
    text: str
    created_at: str  # RFC 3339
    attachments: list[TicketAttachmentInfo] = Field(default_factory=list)


class TicketSummary(_Body):
    id: int
    category: TicketCategory
    priority: TicketPriority
    subject: str
    status: TicketStatus
    team: str
    created_at: str
    due_at: str  # the first answer is due by then (the priority's SLA)
    breached: bool


class TicketView(TicketSummary):
    messages: list[TicketMessage]


class TicketList(_Body):
    tickets: list[TicketSummary]


# --- KPI report (sub-site → HQ) -------------------------------------------------------------
# HQ sees every site's money (payments, fulfilment); only the shop sees its visitors and
# customers. The shop reports per day and category what HQ cannot count itself; HQ stores
# the latest report per (site, day, category) and computes conversion, repeat-customer and
# complaint rates from it. Numbers only: no customer identity leaves the shop.
KPI_REPORT_PATH = "/api/v1/kpis"  # POST KpiReport
MAX_KPI_DAYS = 35
MAX_KPI_ROWS = 35 * 64


class KpiDay(_Body):
    day: str  # YYYY-MM-DD (UTC)
    category: str = Field(max_length=64)  # "" = visits of pages without a category
    visits: int = Field(ge=0)
    orders: int = Field(ge=0)  # paid orders
    customers: int = Field(ge=0)  # distinct customers who paid that day
    repeat_customers: int = Field(ge=0)  # of those, ones who had paid before
    complaints: int = Field(ge=0)  # disputes opened that day


class KpiReport(_Body):
    days: list[KpiDay] = Field(max_length=MAX_KPI_ROWS)
