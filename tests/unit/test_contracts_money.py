from decimal import Decimal

import pytest

from kameng.contracts.money import MoneyError, apply_markup, fen_to_decimal, fen_to_str, to_fen


def test_to_fen_parses_decimal_strings_exactly():
    assert to_fen("12.34") == 1234
    assert to_fen("0.1") == 10
    assert to_fen(Decimal("5")) == 500
    assert to_fen(3) == 300


@pytest.mark.parametrize("bad", ["0.001", "abc", "NaN", 1.5, True])
def test_to_fen_refuses_inexact_or_float(bad):
    with pytest.raises(MoneyError):
        to_fen(bad)


def test_fen_round_trip():
    assert fen_to_str(1234) == "12.34"
    assert fen_to_str(5) == "0.05"
    assert fen_to_decimal(100) == Decimal("1.00")
    assert to_fen(fen_to_str(987654)) == 987654


def test_markup_rounds_up_and_never_below_cost():
    assert apply_markup(1000, "10") == 1100
    assert apply_markup(999, "12.5") == 1124  # 1123.875 → up to the next fen
    assert apply_markup(1000, "-20") == 1000
    assert apply_markup(1000, 0) == 1000
    with pytest.raises(MoneyError):
        apply_markup(1000, 1.5)
