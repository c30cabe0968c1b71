"""Pure parts of the risk outcome store, the review service and the order region."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kameng.workers.risk.policy import Hit, Verdict, compile_policy
from kameng.workers.risk.review import QueueFilter, ReviewError, parse_age, snooze_key
from kameng.workers.risk.store import DECISION_COLUMNS, Outcome, params_of
from kameng_storefront.shop.orders import OrderRefused, order_region


def test_params_carry_every_hit_with_generation_mode_and_reason():
    pol = compile_policy("p", {"rules": [
        {"name": "a", "expression": "true", "action": "review"}]}, 4)
    view = {"eventId": "o1:order.paid", "site": "s", "orderId": "o1", "event": "order.paid",
            "customer": "c", "ip": "", "category": "game", "product": "x", "region": "CN-31",
            "amount": 500, "currency": "CNY", "ts": 1_700_000_000_123}
    verdict = Verdict("review", "p/a", (Hit("p", "a", "review", "why", False),
                                        Hit("p", "b", "block", "shadow", True, "")))
    p = params_of([Outcome(view, verdict, [pol], {"p": {"n": 3}})],
                  datetime(2026, 1, 1, tzinfo=UTC))
    (d,) = [dict(zip(DECISION_COLUMNS, row, strict=True)) for row in json.loads(p["d"])]
    assert (d["event_id"], d["ts_ms"], d["policies"], d["features"]) == (
        "o1:order.paid", 1_700_000_000_123, {"p": 4}, {"p": {"n": 3}})
    # In evaluation order, in the decision's own row; the features are the decision's.
    assert d["hits"] == [
        {"policy": "p", "rule": "a", "generation": 4, "mode": "enforce", "action": "review",
         "reason": "why", "error": ""},
        {"policy": "p", "rule": "b", "generation": 4, "mode": "shadow", "action": "block",
         "reason": "shadow", "error": ""}]
    assert p["ids"] == ["o1:order.paid"]


def test_ages_and_filters():
    assert parse_age("") is None
    assert parse_age("30m") == timedelta(minutes=30)
    assert parse_age("7d") == timedelta(days=7)
    for bad in ("7", "1w", "-1h", "1h; DROP"):
        with pytest.raises(ReviewError):
            parse_age(bad)
    with pytest.raises(ReviewError):
        QueueFilter(action="block")  # blocked orders are final, not in the queue
    with pytest.raises(ReviewError):
        snooze_key("site", "x")


@pytest.mark.parametrize(("product", "chosen", "want"), [
    ("", "", ""), ("", "cn-31", "CN-31"), ("", " US-NY ", "US-NY"),
    ("CN-11", "", "CN-11"), ("CN-11", "cn-11", "CN-11")])
def test_order_region(product, chosen, want):
    assert order_region(product, chosen) == want


@pytest.mark.parametrize(("product", "chosen"), [
    ("", "Narnia"), ("", "CN31"), ("", "CN-1234"), ("CN-11", "CN-31"), ("", "C"*50)])
def test_order_region_refused(product, chosen):
    with pytest.raises(OrderRefused):
        order_region(product, chosen)
