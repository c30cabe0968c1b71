"""Money contract: integer minor units (fen) in code and databases, ``Decimal`` at the edges.

Floats never appear: a float cannot represent 0.10 exactly, and a card platform that
loses a fen per order loses real money at volume.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

__all__ = [
    "FEN_PER_UNIT",
    "MoneyError",
    "apply_markup",
    "fen_to_decimal",
    "fen_to_str",
    "to_fen",
]

FEN_PER_UNIT = 100
#: The largest amount any database column holds (PostgreSQL bigint): a wire amount above
#: it is malformed input, refused with 4xx at the edge, never a 500 from the database.
MAX_FEN = 2**63 - 1


class MoneyError(ValueError):
    """A monetary value that cannot be represented exactly in fen."""


def to_fen(value: Decimal | str | int) -> int:
    """Parse a decimal amount (``"12.34"``, ``Decimal("12.3")``, ``12``) into integer fen.

    Sub-fen precision is refused rather than rounded: silently rounding an input is how
    ledgers stop balancing.
    """
    if isinstance(value, bool | float):
        raise MoneyError("money must be a decimal string, Decimal or int, never float/bool")
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    fen = amount * FEN_PER_UNIT
    if fen != fen.to_integral_value():
        raise MoneyError(f"amount has sub-fen precision: {value!r}")
    return int(fen)


def fen_to_decimal(fen: int) -> Decimal:
    """Integer fen → ``Decimal`` with exactly two places (``1234`` → ``Decimal("12.34")``)."""
    _require_int(fen)
    return (Decimal(fen) / FEN_PER_UNIT).quantize(Decimal("0.01"))


def fen_to_str(fen: int) -> str:
    """Integer fen → display/JSON string with two places (``1234`` → ``"12.34"``)."""
    return str(fen_to_decimal(fen))


def apply_markup(cost_fen: int, markup_percent: Decimal | str | int) -> int:
    """Sale price in fen for ``cost_fen`` raised by ``markup_percent``.

    Rounds up to the next fen (the partner never undercuts by a rounding fraction) and
    clamps at cost: a negative or zero markup can never sell below HQ cost.
    """
    _require_int(cost_fen)
    if cost_fen < 0:
        raise MoneyError("cost must not be negative")
    if isinstance(markup_percent, float | bool):
        raise MoneyError("markup must be a decimal string, Decimal or int, never float")
    pct = Decimal(markup_percent)
    raw = Decimal(cost_fen) * (Decimal(100) + pct) / Decimal(100)
    price = int(raw.to_integral_value(rounding=ROUND_CEILING))
    return max(price, cost_fen)


def _require_int(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MoneyError("fen amounts are integers")
