"""Order-event and risk-decision contracts (Redis streams).

* ``kameng:orders:<site>`` — :class:`OrderEvent`, written by the storefront, read by
  the risk and settlement workers with consumer groups. Delivery is at-least-once, so
  every event carries ``event_id`` (the idempotency key; for order events it is
  deterministic, ``<order_id>:<event>``, so re-publishing is harmless).
* ``kameng:decisions:<site>`` — :class:`Decision`, written by the risk worker, read by
  the storefront (``freeze`` holds delivery, ``block`` refuses it).

Stream entries are flat string maps (Redis stores bytes); :meth:`to_fields` /
:meth:`from_fields` are the only (de)serialisers, so all sides agree byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "DECISIONS_PREFIX",
    "DECISION_ACTIONS",
    "EVENT_TYPES",
    "FUNDINGS",
    "ORDERS_PREFIX",
    "SCHEMA_VERSION",
    "Decision",
    "DecisionAction",
    "EventError",
    "EventType",
    "Funding",
    "OrderEvent",
    "decisions_stream",
    "hash_pii",
    "make_event_id",
    "orders_stream",
]

SCHEMA_VERSION = 1
EventType = Literal[
    "order.created",
    "order.paid",
    "order.delivered",
    "order.refunded",
    # A refund asked for after delivery: HQ decides it (the buyer holds the key, so the
    # shop moves no money). Settlement holds the order's margin open until then.
    "order.disputed",
    "withdrawal.requested",
    "topup",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
# How the money of an order event moved: through HQ's payment channel, or from the
# customer's wallet at the shop (its top-up already came through the channel, as a
# ``topup`` event, so settlement must not count it twice). Empty in entries written before
# the field existed; readers treat that as ``channel``.
Funding = Literal["", "channel", "wallet"]
FUNDINGS: tuple[str, ...] = Funding.__args__  # type: ignore[attr-defined]
DecisionAction = Literal["allow", "review", "freeze", "block"]
DECISION_ACTIONS: tuple[str, ...] = DecisionAction.__args__  # type: ignore[attr-defined]


class EventError(ValueError):
    """A stream entry that does not match the contract."""


ORDERS_PREFIX = "kameng:orders:"
DECISIONS_PREFIX = "kameng:decisions:"


def orders_stream(site: str) -> str:
    return f"{ORDERS_PREFIX}{_site(site)}"


def decisions_stream(site: str) -> str:
    return f"{DECISIONS_PREFIX}{_site(site)}"


def _site(site: str) -> str:
    if not site or ":" in site or any(c.isspace() for c in site):
        raise EventError("site name must be non-empty without ':' or whitespace")
    return site


def make_event_id(order_id: str, event: str) -> str:
    """Deterministic idempotency key of an order event."""
    return f"{order_id}:{event}"


def hash_pii(value: str, pepper: bytes = b"") -> str:
    """Hash a customer contact or IP for events: HMAC-SHA256 hex of the normalised value.

    Workers only need equality (velocity, repeat buyers), never the value itself.
    """
    norm = value.strip().lower().encode("utf-8")
    return hmac.new(pepper, norm, hashlib.sha256).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _to_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes | bytearray) else str(v)


def _decode_map(fields: Mapping[Any, Any]) -> dict[str, str]:
    if type(fields) is dict and all(type(k) is str and type(v) is str
                                    for k, v in fields.items()):
        return fields  # already decoded (the workers' clients decode): no copy per entry
    return {_to_str(k): _to_str(v) for k, v in fields.items()}


class _StreamModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("ts", mode="after", check_fields=False)
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    def to_fields(self) -> dict[str, str]:
        """Flat ``str → str`` map for ``XADD`` (``None`` becomes ``""``)."""
        out: dict[str, str] = {}
        for k, v in self.model_dump(mode="json").items():
            out[k] = "" if v is None else str(v)
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> Self:
        """Parse an ``XREAD`` entry (bytes or str keys/values)."""
        data = _decode_map(fields)
        try:
            version = int(data.get("v", "0"))
        except ValueError as exc:
            raise EventError("schema version is not an integer") from exc
        if version != SCHEMA_VERSION:
            raise EventError(f"unsupported schema version {version}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            # Where and what, never the value (an entry may carry a customer hash).
            where = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                              for e in exc.errors()[:3])
            raise EventError(f"invalid {cls.__name__}: {exc.error_count()} errors "
                             f"({where})") from exc


class OrderEvent(_StreamModel):
    """One entry of ``kameng:orders:<site>``. ``amount`` is integer fen."""

    v: int = SCHEMA_VERSION
    event: EventType
    event_id: str = Field(min_length=1)
    site: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    customer: str = ""  # hash_pii(contact)
    ip: str = ""  # hash_pii(ip)
    category: str = ""
    product: str = ""
    # The buyer's region (License regions vocabulary, ISO 3166-2, e.g. "CN-31"): where the
    # card or top-up is for, chosen at checkout, or the product's own region for a
    # regional product (storefront/shop/orders.py ``order_region``); "" when unknown.
    # Added in place (schema v1): readers that predate it ignore it and an entry without
    # it reads as "".
    region: str = ""
    amount: int = Field(ge=0)
    currency: str = "CNY"
    ts: datetime = Field(default_factory=_now)
    # Added in schema 1 without a version bump: optional with a default, and older
    # readers ignore unknown fields (``extra="ignore"``).
    funding: Funding = ""

    @classmethod
    def read(cls, fields: Mapping[Any, Any]) -> dict[str, Any]:
        """The entry's fields, checked, as a dict: exactly ``from_fields(fields)
        .model_dump()``, without building a model (the risk worker reads every event;
        a model per event cost more than its velocity counting's packing).

        An entry as :meth:`to_fields` writes it (the only writer) is checked here, field
        by field (:func:`_read_canonical`). Anything else (a lax but valid form such as an
        amount " 5", or an invalid entry) goes through the model itself, so the two accept
        exactly the same entries and an invalid one raises the model's
        :class:`EventError` naming the fields."""
        # A dict of str needs no decoding; any other value fails a check below and the
        # model's path decodes it.
        data = fields if type(fields) is dict else _decode_map(fields)
        out = _read_canonical(data)
        return out if out is not None else cls.from_fields(data).model_dump()

    @classmethod
    def for_order(cls, event: EventType, **kw: Any) -> OrderEvent:
        """Build an event whose ``event_id`` is derived from order id and event type."""
        kw.setdefault("event_id", make_event_id(kw["order_id"], event))
        return cls(event=event, **kw)


_EVENT_SET = frozenset(EVENT_TYPES)
_FUNDING_SET = frozenset(FUNDINGS)
_VERSION = str(SCHEMA_VERSION)
# ``ts`` as ``to_fields`` writes it (pydantic's JSON form of an aware datetime); other
# forms pydantic also accepts (a date, a unix time, "+0800") take the model's path.
_ISO_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)?")
_REQUIRED = ("event_id", "site", "order_id")
_OPTIONAL = ("customer", "ip", "category", "product", "region")


def _read_canonical(f: dict[str, str]) -> dict[str, Any] | None:
    """:meth:`OrderEvent.read`'s checks of an entry in the canonical form; None when any
    check fails (the model then decides). Each check mirrors a constraint of
    :class:`OrderEvent` (unit-tested one by one, and against the model)."""
    g = f.get
    if g("v") != _VERSION:
        return None
    event = g("event")
    if event not in _EVENT_SET:
        return None
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "event": event}
    for k in _REQUIRED:  # str, min_length=1
        x = g(k)
        if type(x) is not str or not x:
            return None
        out[k] = x
    for k in _OPTIONAL:  # str, default ""
        x = g(k, "")
        if type(x) is not str:
            return None
        out[k] = x
    amount = g("amount")  # int, ge=0: ASCII digits only (no sign, no space, no "_")
    if type(amount) is not str or not amount.isascii() or not amount.isdigit():
        return None
    out["amount"] = int(amount)
    currency = g("currency", "CNY")
    if type(currency) is not str:
        return None
    out["currency"] = currency
    ts = g("ts")
    if type(ts) is not str or not _ISO_TS.fullmatch(ts):
        return None  # a missing ts takes the model's default (now)
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:  # day 31 of February and the like
        return None
    # _StreamModel._aware: naive is UTC, aware is converted to UTC.
    out["ts"] = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    funding = g("funding", "")
    if funding not in _FUNDING_SET:
        return None
    out["funding"] = funding
    return out


class Decision(_StreamModel):
    """One entry of ``kameng:decisions:<site>``."""

    v: int = SCHEMA_VERSION
    order_id: str = Field(min_length=1)
    action: DecisionAction
    rule: str = ""
    ts: datetime = Field(default_factory=_now)
