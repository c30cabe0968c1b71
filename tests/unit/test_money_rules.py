"""Money rules at their boundaries: fen parsing, markup rounding, the shop's sale price and
the partner's withdrawal rule. Written so that a flipped comparison, a dropped check or a
changed rounding mode fails a test (`make mutation` checks that it does)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kameng.contracts.money import MoneyError, apply_markup, fen_to_decimal, fen_to_str, to_fen
from kameng.contracts.siteconfig import PriceRule, SiteConfig
from kameng_storefront.shop.balance import withdrawal_refusal
from kameng_storefront.shop.catalog import price_of

# --- to_fen -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "fen"), [
    ("12.34", 1234), ("-0.05", -5), ("0", 0), (Decimal("0.10"), 10), (Decimal("7"), 700),
    (12, 1200), ("1E+2", 10000),
])
def test_to_fen_exact(value, fen):
    got = to_fen(value)
    assert got == fen
    assert type(got) is int


@pytest.mark.parametrize(("value", "message"), [
    (1.5, "money must be a decimal string, Decimal or int, never float/bool"),
    (True, "money must be a decimal string, Decimal or int, never float/bool"),
    ("abc", "not a decimal amount: 'abc'"),
    ("Infinity", "not a finite amount: 'Infinity'"),
    (Decimal("NaN"), "not a finite amount: Decimal('NaN')"),
    ("0.001", "amount has sub-fen precision: '0.001'"),
    (Decimal("0.125"), "amount has sub-fen precision: Decimal('0.125')"),
])
def test_to_fen_refuses_with_a_message_that_says_why(value, message):
    with pytest.raises(MoneyError) as exc:
        to_fen(value)
    assert str(exc.value) == message


# --- fen → text ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fen", "text"), [(0, "0.00"), (5, "0.05"), (1234, "12.34"),
                                           (-150, "-1.50"), (100, "1.00")])
def test_fen_to_str_always_two_places(fen, text):
    assert fen_to_str(fen) == text
    assert str(fen_to_decimal(fen)) == text


@pytest.mark.parametrize("bad", [True, 1.0, "12", None])
def test_fen_amounts_must_be_int(bad):
    with pytest.raises(MoneyError, match=r"^fen amounts are integers$"):
        fen_to_decimal(bad)
    with pytest.raises(MoneyError, match=r"^fen amounts are integers$"):
        apply_markup(bad, "10")


# --- markup -------------------------------------------------------------------------------


@pytest.mark.parametrize(("cost", "pct", "price"), [
    (1000, "10", 1100),
    (999, "12.5", 1124),      # 1123.875 → up
    (1000, "0.01", 1001),     # 1000.1 → up (half-even would give 1000)
    (1003, "0.05", 1004),     # 1003.5015 → up
    (101, "50", 152),         # 151.5 → up (half-even would give 152 too; ceiling anyway)
    (7, "1", 8),              # 7.07 → up
    (0, "25", 0),             # a free product stays free
    (1000, "-20", 1000),      # never below cost
    (1000, "0", 1000),
    (1000, Decimal("100"), 2000),
    (1000, 3, 1030),
])
def test_markup_rounds_up_to_the_fen_and_never_undercuts(cost, pct, price):
    got = apply_markup(cost, pct)
    assert got == price
    assert type(got) is int


def test_markup_refuses_negative_cost_and_float_markup():
    with pytest.raises(MoneyError, match=r"^cost must not be negative$"):
        apply_markup(-1, "10")
    for bad in (1.5, True):
        with pytest.raises(MoneyError,
                           match=r"^markup must be a decimal string, Decimal or int, never float$"):
            apply_markup(100, bad)


# --- the shop's price rule (site config price rules → price_of) ----------------------------


def _site(*rules: tuple[str, str]) -> SiteConfig:
    return SiteConfig(site="demo", price_rules=[
        PriceRule(category=c, markup_percent=Decimal(p)) for c, p in rules])


def test_price_uses_the_category_rule_over_the_wildcard():
    site = _site(("*", "5"), ("game", "10"), ("*", "7"))
    assert site.markup_for("game") == Decimal("10")
    assert site.markup_for("mobile") == Decimal("7")  # the last wildcard wins
    assert price_of(site, "game", 1000) == 1100
    assert price_of(site, "mobile", 1000) == 1070


def test_last_matching_rule_wins_and_no_rule_means_cost():
    site = _site(("game", "10"), ("game", "20"))
    assert site.markup_for("game") == Decimal("20")
    assert price_of(site, "game", 1000) == 1200
    assert site.markup_for("other") == Decimal(0)
    assert price_of(site, "other", 1000) == 1000
    # A zero category rule is a rule: it beats a wildcard markup.
    assert _site(("*", "30"), ("game", "0")).markup_for("game") == Decimal(0)


def test_price_of_rounds_up_and_never_below_cost():
    assert price_of(_site(("game", "12.5")), "game", 999) == 1124
    assert price_of(_site(("game", "-50")), "game", 999) == 999


def test_json_markup_keeps_exact_decimal():
    site = SiteConfig.model_validate({"site": "demo",
                                      "priceRules": [{"category": "g", "markupPercent": 12.1}]})
    assert site.markup_for("g") == Decimal("12.1")


# --- withdrawal rule ----------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "balance", "minimum", "refusal"), [
    (1000, 1000, 100, None),               # exactly the balance
    (1001, 1000, 100, "exceeds_balance"),  # one fen more
    (100, 1000, 100, None),                # exactly the minimum
    (99, 1000, 100, "below_minimum"),      # one fen less
    (50, 10, 100, "below_minimum"),        # the minimum is checked first
    (100, -5, 100, "exceeds_balance"),     # a negative balance allows nothing
])
def test_withdrawal_rule_boundaries(amount, balance, minimum, refusal):
    assert withdrawal_refusal(amount, balance, minimum) == refusal
