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
            raise EventError(f"invalid {cls.__name__}: {exc.error_count()} errors") from exc


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
    def for_order(cls, event: EventType, **kw: Any) -> OrderEvent:
        """Build an event whose ``event_id`` is derived from order id and event type."""
        kw.setdefault("event_id", make_event_id(kw["order_id"], event))
        return cls(event=event, **kw)


class Decision(_StreamModel):
    """One entry of ``kameng:decisions:<site>``."""

    v: int = SCHEMA_VERSION
    order_id: str = Field(min_length=1)
    action: DecisionAction
    rule: str = ""
    ts: datetime = Field(default_factory=_now)
