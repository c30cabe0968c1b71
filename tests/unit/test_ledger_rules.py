"""The posting rules and statement figures, pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kameng.ledger import rules
from kameng.ledger.statements import compute


def test_share_rounds_half_up_to_the_fen():
    assert rules.share_of(12345, 800) == 988  # 987.6
    assert rules.share_of(101, 1250) == 13  # 12.625
    assert rules.share_of(10, 500) == 1  # 0.5 → 1
    assert rules.share_of(9, 500) == 0  # 0.45 → 0


def test_percent_to_basis_points_refuses_sub_basis_points():
    assert rules.percent_to_bp("12.5") == 1250
    assert rules.percent_to_bp("8") == 800
    with pytest.raises(rules.PostingError):
        rules.percent_to_bp("12.505")
    with pytest.raises(rules.PostingError):
        rules.percent_to_bp("101")


@given(st.integers(1, 10**9), st.integers(0, 10_000), st.lists(st.integers(1, 10**6),
                                                                max_size=8))
def test_partial_refunds_reverse_the_share_exactly_and_never_more(paid, bp, parts):
    share = rules.share_of(paid, bp)
    back = refunded = 0
    for p in parts:
        if refunded + p > paid:
            with pytest.raises(rules.PostingError):
                rules.refund_share(share, paid, refunded, p)
            continue
        back += rules.refund_share(share, paid, refunded, p)
        refunded += p
        assert 0 <= back <= share
    if refunded < paid:
        back += rules.refund_share(share, paid, refunded, paid - refunded)
    assert back == share  # everything refunded gives back exactly the share taken


@given(st.integers(1, 10**9), st.integers(0, 10_000))
def test_every_entry_balances(amount, bp):
    share = rules.share_of(amount, bp)
    for legs in (rules.sale_legs("s", amount, share), rules.refund_legs("s", amount, share),
                 rules.hold_legs("s", amount), rules.paid_legs("s", amount),
                 rules.void_legs("s", amount), rules.fee_legs("s", amount)):
        assert sum(a for _, a in legs) == 0


def test_periods_and_base_fee():
    t = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert rules.period_bounds("Monthly", t) == (datetime(2026, 12, 1, tzinfo=UTC),
                                                 datetime(2027, 1, 1, tzinfo=UTC))
    assert rules.period_bounds("Weekly", t)[0] == datetime(2026, 12, 28, tzinfo=UTC)
    assert rules.period_bounds("Daily", t)[1] == datetime(2027, 1, 1, tzinfo=UTC)
    s, e = rules.period_bounds("Weekly", t)
    assert rules.base_fee_share(1_200_000, "Monthly", s, e) == 100_000
    assert rules.base_fee_share(999_999, "Weekly", s, e) == 19_178


def test_statement_figures_by_hand():
    entries = [
        {"kind": "sale", "order_id": "A", "category": "x", "amount": 1000, "share": 100,
         "adjustment": False},
        {"kind": "refund", "order_id": "A", "category": "x", "amount": 500, "share": 50,
         "adjustment": False},
        {"kind": "sale", "order_id": "B", "category": "y", "amount": 300, "share": 6,
         "adjustment": True},
        {"kind": "withdrawal.hold", "order_id": "W1", "category": "", "amount": 200,
         "share": 0, "adjustment": False},
    ]
    f = compute(entries, opening=50, base_fee=10)
    assert f["revenue_share"] == {"x": 50}
    assert f["adjustments"] == 294
    assert f["net_payable"] == 1000 - 500 - 50 - 10 + 294
    assert f["closing"] == 50 + f["net_payable"] - 200
    assert f["orders"] == [{"order_id": "A", "category": "x", "gross": 1000, "refunded": 500,
                            "share": 50, "net": 450}]


def test_rates_from_license_fees_round_trip():
    r = rules.Rates.from_fees({"currency": "CNY", "baseAnnualFee": "9999.99",
                               "settlementPeriod": "Weekly",
                               "revenueShare": [{"category": "a", "percent": "12.5"}]})
    assert r.share_bp == {"a": 1250}
    assert r.base_annual_fee == 999_999
    assert rules.Rates.from_json(r.to_json()) == r


def test_wallet_funded_legs_use_the_sites_wallets_not_escrow():
    # Top-up 100.00, wallet order 60.00 at 8 %, 20.00 refunded (by hand: share 4.80, 1.60
    # given back): escrow only ever sees the top-up.
    legs = (rules.topup_legs("s", 10000) + rules.sale_legs("s", 6000, 480, "wallet")
            + rules.refund_legs("s", 2000, 160, "wallet"))
    total: dict[str, int] = {}
    for name, amt in legs:
        total[name] = total.get(name, 0) + amt
    assert total == {rules.ESCROW: 10000, rules.wallets("s"): -6000,
                     rules.payable("s"): -3680, rules.REVENUE_SHARE: -320}
    assert sum(total.values()) == 0
    # Channel-funded (and events from before the field existed) keep escrow.
    assert rules.sale_legs("s", 6000, 480)[0] == (rules.ESCROW, 6000)
    assert [rules.funding_of(f) for f in ("", "channel", "wallet")] == [
        "channel", "channel", "wallet"]


def test_event_hash_of_channel_events_is_unchanged_and_wallet_funding_counts():
    from kameng.contracts.events import OrderEvent
    from kameng.ledger.repo import event_hash

    def ev(funding: str) -> OrderEvent:
        return OrderEvent.for_order("order.paid", site="s", order_id="O1", amount=6000,
                                    category="game-cards", funding=funding)

    # The hash entries were stored with before `funding` existed: a re-delivered old event
    # must stay a duplicate, not become a conflict.
    before = rules.input_hash(event="order.paid", site="s", order_id="O1", amount=6000,
                              currency="CNY", category="game-cards")
    assert event_hash(ev("")) == event_hash(ev("channel")) == before
    assert event_hash(ev("wallet")) != before
