"""The product file of `kameng storefront hq-import`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kameng.contracts.money import MoneyError
from kameng_storefront.hq.bulk_import import load_products


def test_products_parse_with_camel_case_keys_and_exact_amounts() -> None:
    (p,) = load_products('[{"id": "psn-200", "category": "game", "faceValue": "200.00",'
                         ' "cost": 186, "nameEn": "PSN"}]')
    assert (p.id, p.category, p.name_en, p.region) == ("psn-200", "game", "PSN", "")
    assert p.fen() == (20000, 18600)


@pytest.mark.parametrize("bad", [
    '[{"id": "", "category": "game", "faceValue": "1", "cost": "1"}]',
    '[{"id": "x", "faceValue": "1", "cost": "1"}]',
    '[{"id": "x", "category": "game", "faceValue": 1.5, "cost": "1"}]',
    '[{"id": "x", "category": "game", "faceValue": "1", "cost": "1", "colour": "red"}]',
])
def test_invalid_products_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        load_products(bad)


@pytest.mark.parametrize("amount", ["1.001", "-1", "abc"])
def test_amounts_must_be_exact_and_not_negative(amount: str) -> None:
    (p,) = load_products(f'[{{"id": "x", "category": "g", "faceValue": "{amount}", '
                         f'"cost": "0"}}]')
    with pytest.raises(MoneyError):
        p.fen()
