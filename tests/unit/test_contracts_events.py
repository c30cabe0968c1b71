from datetime import UTC, datetime

import pytest

from kameng.contracts.events import (
    Decision,
    EventError,
    OrderEvent,
    decisions_stream,
    hash_pii,
    orders_stream,
)


def test_stream_names():
    assert orders_stream("demo") == "kameng:orders:demo"
    assert decisions_stream("demo") == "kameng:decisions:demo"
    with pytest.raises(EventError):
        orders_stream("a:b")


def test_order_event_round_trip_through_bytes():
    ev = OrderEvent.for_order(
        "order.paid", site="demo", order_id="O1", customer=hash_pii("A@x.com "),
        ip=hash_pii("1.2.3.4"), category="game", product="p1", amount=1234,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert ev.event_id == "O1:order.paid"
    fields = ev.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["amount"] == "1234"
    assert fields["v"] == "1"
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    assert OrderEvent.from_fields(raw) == ev
    assert hash_pii("a@x.com") == ev.customer


def test_bad_entries_rejected():
    good = OrderEvent.for_order("order.created", site="s", order_id="O", amount=1).to_fields()
    with pytest.raises(EventError):
        OrderEvent.from_fields({**good, "v": "2"})
    with pytest.raises(EventError):
        OrderEvent.from_fields({**good, "event": "order.exploded"})
    with pytest.raises(EventError):
        OrderEvent.from_fields({**good, "amount": "12.5"})


def test_decision_round_trip():
    d = Decision(order_id="O1", action="freeze", rule="velocity")
    assert Decision.from_fields(d.to_fields()) == d
    with pytest.raises(EventError):
        Decision.from_fields({**d.to_fields(), "action": "nuke"})
