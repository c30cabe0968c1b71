"""The wallet's pure rules: top-up amounts, debits, idempotency keys, sign-up checks, and
the order event's funding marker (schema-compatible both ways)."""

from __future__ import annotations

import pytest

from kameng.contracts.events import OrderEvent
from kameng_storefront.shop.wallet import (
    TOPUP_MAX_FEN,
    TOPUP_MIN_FEN,
    debit_refusal,
    is_topup_id,
    movement_key,
    new_topup_id,
    signup_problem,
    topup_amount,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("50", 5000), ("12.50", 1250), (" 1 ", 100), ("5000", 500_000), ("0.99", "topup_too_small"),
    ("5000.01", "topup_too_large"), ("1.001", "topup_invalid"), ("abc", "topup_invalid"),
    ("", "topup_invalid"), ("-5", "topup_too_small"), ("NaN", "topup_invalid"),
    ("1e3", 100_000), ("Infinity", "topup_invalid"),
])
def test_topup_amount(text, expected):
    assert topup_amount(text) == expected


def test_topup_bounds_are_sane():
    assert 0 < TOPUP_MIN_FEN < TOPUP_MAX_FEN


@pytest.mark.parametrize(("balance", "amount", "expected"), [
    (1000, 1000, None), (1000, 999, None), (1000, 1001, "insufficient_balance"),
    (0, 1, "insufficient_balance"), (1000, 0, "bad_request"), (1000, -5, "bad_request"),
])
def test_debit_refusal(balance, amount, expected):
    assert debit_refusal(balance, amount) == expected


def test_movement_keys_separate_kinds_and_refs():
    assert movement_key("payment", "K1") != movement_key("refund", "K1")
    assert movement_key("topup", "P1") == "topup:P1"


def test_topup_ids_never_look_like_order_ids():
    tid = new_topup_id()
    assert is_topup_id(tid)
    assert not is_topup_id("K20261201ABCDEFGHIJKL")
    assert new_topup_id() != tid


@pytest.mark.parametrize(("email", "pw", "confirm", "expected"), [
    ("a@b.cn", "correct horse battery", "correct horse battery", None),
    ("not-an-email", "correct horse battery", "correct horse battery", "email_invalid"),
    ("a b@c.cn", "correct horse battery", "correct horse battery", "email_invalid"),
    ("", "correct horse battery", "correct horse battery", "email_invalid"),
    ("a@b.cn", "correct horse battery", "other", "password_mismatch"),
    ("a@b.cn", "short", "short", "password_too_short"),
    ("a@b.cn", "aaaaaaaaaaaaaa", "aaaaaaaaaaaaaa", "password_too_weak"),
])
def test_signup_problem(email, pw, confirm, expected):
    assert signup_problem(email, pw, confirm) == expected


def test_funding_marker_round_trips_and_old_entries_still_parse():
    ev = OrderEvent.for_order("order.paid", site="s", order_id="K1", amount=100,
                              funding="wallet")
    assert OrderEvent.from_fields(ev.to_fields()).funding == "wallet"
    old = {k: v for k, v in ev.to_fields().items() if k != "funding"}
    assert OrderEvent.from_fields(old).funding == ""  # written before the field existed
