"""Ledger posting rules, pinned to the fen (issue 15: the mutants the money tests missed).

Every expected value below is worked out by hand from the module's docstring and issue 9
(a sale of A with share S: source +A, payable −(A−S), revenue_share −S; refunds reverse
the share in proportion, cumulatively rounded half up; holds, payouts, voids and fees
each move one amount between two named accounts), not copied from the code's output.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from kameng.api.license import Fees, RevenueShare
from kameng.ledger import rules

# --- percentages → basis points -------------------------------------------------------

REFUSED = (r"is not a percentage with at most 2 decimals between 0 and 100")


def test_percent_bounds_are_inclusive():
    # 0 % and 100 % are both valid shares (a category HQ takes nothing of, or all of).
    assert rules.percent_to_bp("0") == 0
    assert rules.percent_to_bp("0.00") == 0
    assert rules.percent_to_bp("0.01") == 1
    assert rules.percent_to_bp("99.99") == 9_999
    assert rules.percent_to_bp("100") == 10_000
    assert rules.percent_to_bp(15) == 1_500
    assert rules.percent_to_bp(Decimal("8.25")) == 825


@pytest.mark.parametrize("bad", ["100.01", "101", "-0.01", "-1", "0.005", "12.345"])
def test_percent_outside_0_100_or_finer_than_a_basis_point_is_refused(bad):
    with pytest.raises(rules.PostingError, match=rf"revenue share '{bad}' {REFUSED}"):
        rules.percent_to_bp(bad)


# --- refunds ----------------------------------------------------------------------------


@pytest.mark.parametrize("refund", [0, -1, -500])
def test_a_refund_of_nothing_or_less_is_refused(refund):
    with pytest.raises(rules.PostingError, match=r"^a refund must be positive$"):
        rules.refund_share(100, 1000, 0, refund)


def test_a_refund_beyond_what_is_left_is_refused_and_names_what_is_left():
    # Paid 10.00, 7.00 already refunded: 3.00 is left; 3.01 is one fen too many.
    with pytest.raises(rules.PostingError,
                       match=r"^refund of 301 fen exceeds what is left of the payment "
                             r"\(300 fen\)$"):
        rules.refund_share(100, 1000, 700, 301)
    # Exactly what is left is fine: share 1.00 of 10.00; 7.00 back reversed 0.70 of it,
    # the last 3.00 reverses the remaining 0.30.
    assert rules.refund_share(100, 1000, 700, 300) == 30


def test_partial_refunds_by_hand():
    # 10.01 at 12.5 %: share 125.125 fen → 125.
    share = rules.share_of(1001, 1250)
    assert share == 125
    # 0.01 back: 125 × 1/1001 = 0.1249 → 0 fen reversed.
    assert rules.refund_share(share, 1001, 0, 1) == 0
    # 5.00 more (501 in all): 125 × 501/1001 = 62.56 → 63 cumulative, 63 now.
    assert rules.refund_share(share, 1001, 1, 500) == 63
    # The last 5.00: everything back, exactly the 125 taken: 62 now.
    assert rules.refund_share(share, 1001, 501, 500) == 62


def test_refund_share_rounds_exact_halves_up():
    # Share 0.05 of 0.10; 0.01 back reverses 0.5 fen → 1 (half up, not to even: 0).
    assert rules.refund_share(5, 10, 0, 1) == 1
    # The next 0.01: cumulative 1.0 → 1, so nothing more now.
    assert rules.refund_share(5, 10, 1, 1) == 0
    # Share 0.03 of 0.04, half back: 1.5 → 2 (half down: 1); the other half: 1.
    assert rules.refund_share(3, 4, 0, 2) == 2
    assert rules.refund_share(3, 4, 2, 2) == 1


# --- legs -------------------------------------------------------------------------------


def test_sale_and_refund_legs_name_the_sites_accounts():
    # 60.00 at 8 %: share 4.80; the partner is owed 55.20.
    assert rules.sale_legs("shop-a", 6000, 480) == [
        ("hq:escrow", 6000), ("site:shop-a:payable", -5520), ("hq:revenue_share", -480)]
    assert rules.sale_legs("shop-a", 6000, 480, "channel") == [
        ("hq:escrow", 6000), ("site:shop-a:payable", -5520), ("hq:revenue_share", -480)]
    assert rules.sale_legs("shop-a", 6000, 480, "wallet") == [
        ("site:shop-a:wallets", 6000), ("site:shop-a:payable", -5520),
        ("hq:revenue_share", -480)]
    # 20.00 of it back, 1.60 of the share reversed.
    assert rules.refund_legs("shop-a", 2000, 160) == [
        ("hq:escrow", -2000), ("site:shop-a:payable", 1840), ("hq:revenue_share", 160)]
    assert rules.refund_legs("shop-a", 2000, 160, "wallet") == [
        ("site:shop-a:wallets", -2000), ("site:shop-a:payable", 1840),
        ("hq:revenue_share", 160)]


def test_zero_legs_are_left_out():
    # A 0 % category: no revenue-share leg; a 100 % one: no payable leg.
    assert rules.sale_legs("s", 999, 0) == [("hq:escrow", 999), ("site:s:payable", -999)]
    assert rules.sale_legs("s", 999, 999) == [("hq:escrow", 999),
                                              ("hq:revenue_share", -999)]
    assert rules.refund_legs("s", 10, 0) == [("hq:escrow", -10), ("site:s:payable", 10)]
    assert rules.refund_legs("s", 10, 10) == [("hq:escrow", -10), ("hq:revenue_share", 10)]


def test_money_movements_between_two_accounts():
    # Top-up: customers' money enters escrow, owed to them through their wallets.
    assert rules.topup_legs("shop-b", 10000) == [("hq:escrow", 10000),
                                                 ("site:shop-b:wallets", -10000)]
    # Withdrawal hold: out of the available payable, onto the withdrawals on hold.
    assert rules.hold_legs("shop-b", 2500) == [("site:shop-b:payable", 2500),
                                               ("site:shop-b:withdrawals", -2500)]
    # Paid out: the hold is released and the money leaves escrow.
    assert rules.paid_legs("shop-b", 2500) == [("site:shop-b:withdrawals", 2500),
                                               ("hq:escrow", -2500)]
    # Voided: the hold goes back to the payable.
    assert rules.void_legs("shop-b", 2500) == [("site:shop-b:withdrawals", 2500),
                                               ("site:shop-b:payable", -2500)]
    # Base fee: taken from what HQ owes the partner, into HQ's fee income.
    assert rules.fee_legs("shop-b", 8333) == [("site:shop-b:payable", 8333),
                                              ("hq:fee_income", -8333)]


def test_funding_and_source():
    assert rules.source("s", "wallet") == "site:s:wallets"
    assert rules.source("s", "channel") == "hq:escrow"
    assert rules.funding_of("wallet") == "wallet"
    assert rules.funding_of("anything-else") == "channel"


# --- input hash -------------------------------------------------------------------------


def test_input_hash_is_sha256_of_compact_sorted_json():
    # The stored hashes must stay reproducible: keys sorted, no spaces, non-JSON values
    # (a Decimal, a time) as their str().
    blob = (b'{"amount":6000,"at":"2026-12-01 08:00:00+00:00","event":"order.paid",'
            b'"percent":"12.5"}')
    got = rules.input_hash(percent=Decimal("12.5"), event="order.paid",
                           at=datetime(2026, 12, 1, 8, tzinfo=UTC), amount=6000)
    assert got == hashlib.sha256(blob).hexdigest()
    # Nested structures are canonical too.
    nested = rules.input_hash(rates={"b": 1, "a": [1, 2]}, site="s")
    assert nested == hashlib.sha256(b'{"rates":{"a":[1,2],"b":1},"site":"s"}').hexdigest()


# --- rates ------------------------------------------------------------------------------


def test_rates_from_a_typed_license_fees_model():
    fees = Fees(currency="HKD", base_annual_fee="1200.50", settlement_period="Weekly",
                revenue_share=[RevenueShare(category="game-cards", percent="12.5"),
                               RevenueShare(category="gift-cards", percent="8")])
    r = rules.Rates.from_fees(fees, license="lic-shop-a", generation=3)
    assert r == rules.Rates(currency="HKD", share_bp={"game-cards": 1250, "gift-cards": 800},
                            base_annual_fee=120_050, period="Weekly", license="lic-shop-a",
                            generation=3)


def test_rates_from_a_camelcase_fees_dict():
    fees = {"currency": "USD", "baseAnnualFee": "12000", "settlementPeriod": "Daily",
            "revenueShare": [{"category": "b", "percent": "15"},
                             {"category": "a", "percent": "0.5"}]}
    r = rules.Rates.from_fees(fees, license="lic", generation=7)
    assert r == rules.Rates(currency="USD", share_bp={"a": 50, "b": 1500},
                            base_annual_fee=1_200_000, period="Daily", license="lic",
                            generation=7)


def test_rates_from_fees_defaults():
    # Nothing given: CNY, no shares, no base fee, monthly; no license, generation 0.
    empty = rules.Rates.from_fees({})
    assert (empty.currency, empty.share_bp, empty.base_annual_fee, empty.period,
            empty.license, empty.generation) == ("CNY", {}, 0, "Monthly", "", 0)
    assert rules.Rates.from_fees(Fees()) == empty
    # Explicit empties count as absent.
    assert rules.Rates.from_fees({"currency": "", "baseAnnualFee": "", "revenueShare": None,
                                  "settlementPeriod": ""}) == empty


def test_rates_json_is_the_recorded_form():
    r = rules.Rates(currency="HKD", share_bp={"z": 1500, "a": 800}, base_annual_fee=99,
                    period="Weekly", license="lic-x", generation=4)
    j = r.to_json()
    assert j == {"currency": "HKD", "share_bp": {"a": 800, "z": 1500},
                 "base_annual_fee": 99, "period": "Weekly", "license": "lic-x",
                 "generation": 4}
    assert list(j["share_bp"]) == ["a", "z"]  # sorted: the recorded JSON is canonical
    assert rules.Rates.from_json(j) == r


def test_rates_from_json_reads_every_field_and_defaults_the_missing():
    d = {"currency": "EUR", "share_bp": {"a": "1250"}, "base_annual_fee": "500",
         "period": "Daily", "license": "lic-y", "generation": "2"}
    assert rules.Rates.from_json(d) == rules.Rates(
        currency="EUR", share_bp={"a": 1250}, base_annual_fee=500, period="Daily",
        license="lic-y", generation=2)
    empty = rules.Rates.from_json({})
    assert (empty.currency, empty.share_bp, empty.base_annual_fee, empty.period,
            empty.license, empty.generation) == ("CNY", {}, 0, "Monthly", "", 0)


# --- periods ----------------------------------------------------------------------------


@pytest.fixture
def host_in_utc_plus_8() -> Iterator[None]:
    """The host's local zone is UTC+8: naive times must still be read as UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XST-8"  # POSIX: zone "XST", 8 h east of UTC (no tzdata needed)
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_naive_times_are_utc_whatever_the_hosts_zone(host_in_utc_plus_8):
    # 03:00 on 1 January (UTC) is January's, even where it is still 31 December
    # 19:00 UTC if read as local time.
    assert rules.period_bounds("Monthly", datetime(2027, 1, 1, 3)) == (
        datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))


def test_aware_times_are_converted_to_utc_not_relabelled(host_in_utc_plus_8):
    # 20:00 UTC on 31 December is December's (it is 04:00 on 1 January in UTC+8).
    assert rules.period_bounds("Monthly", datetime(2026, 12, 31, 20, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    # 03:00 on 1 January at UTC+8 is 19:00 UTC on 31 December: December's.
    plus8 = timezone(timedelta(hours=8))
    assert rules.period_bounds("Monthly", datetime(2027, 1, 1, 3, tzinfo=plus8)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert rules.period_bounds("Daily", datetime(2027, 1, 1, 3, tzinfo=plus8)) == (
        datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_period_bounds_by_calendar():
    # 1 December 2026 is a Tuesday: its ISO week starts Monday 30 November.
    t = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert rules.period_bounds("Weekly", t) == (datetime(2026, 11, 30, tzinfo=UTC),
                                                datetime(2026, 12, 7, tzinfo=UTC))
    assert rules.period_bounds("Daily", t) == (datetime(2026, 12, 1, tzinfo=UTC),
                                               datetime(2026, 12, 2, tzinfo=UTC))
    # A month other than December ends on the 1st of the next one of the same year.
    assert rules.period_bounds("Monthly", datetime(2028, 2, 29, tzinfo=UTC)) == (
        datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC))
    with pytest.raises(rules.PostingError, match=r"unknown settlement period 'Yearly'"):
        rules.period_bounds("Yearly", t)


def test_base_fee_share_by_hand():
    day = rules.period_bounds("Daily", datetime(2026, 6, 1, tzinfo=UTC))
    week = rules.period_bounds("Weekly", datetime(2026, 6, 1, tzinfo=UTC))
    month = rules.period_bounds("Monthly", datetime(2026, 2, 1, tzinfo=UTC))
    # A month is a twelfth whatever its length: 10 000.02 a year → 833.335 → 833.34.
    assert rules.base_fee_share(1_000_002, "Monthly", *month) == 83_334
    assert rules.base_fee_share(1_000_001, "Monthly", *month) == 83_333  # 833.3342
    # A day is 1/365: 10 000.00 → 27.397 → 27.40; a week 7/365: 191.78.
    assert rules.base_fee_share(1_000_000, "Daily", *day) == 2_740
    assert rules.base_fee_share(1_000_000, "Weekly", *week) == 19_178
    # 365 fen a year is exactly 1 fen a day; 73 fen a year is 0.2 fen a day → 0.
    assert rules.base_fee_share(365, "Daily", *day) == 1
    assert rules.base_fee_share(73, "Daily", *day) == 0
