"""The HQ ⇄ sub-site contract: one encoding of the catalogue, headers, bodies, paths."""

from __future__ import annotations

import json

import pytest

from kameng.contracts import hq_api
from kameng.contracts.hq_api import Catalog, CatalogProduct, PaymentRequest


def _catalog() -> Catalog:
    return Catalog(products=[CatalogProduct(
        id="g1", name_zh="游戏卡", name_en="Game card", category="game", region="CN-31",
        face_value=10000, cost=9500, stock=3, active=True)])


def test_catalog_wire_format_round_trips():
    cat = _catalog()
    wire = json.loads(cat.to_json())
    assert wire == {"products": [{
        "id": "g1", "nameZh": "游戏卡", "nameEn": "Game card", "category": "game",
        "region": "CN-31", "faceValue": 10000, "cost": 9500, "stock": 3, "active": True}]}
    assert Catalog.model_validate_json(cat.to_json()) == cat
    assert cat.etag() == _catalog().etag()  # deterministic: conditional GETs work
    assert cat.etag().startswith('"')
    assert cat.etag().endswith('"')


def test_headers_and_paths():
    assert hq_api.site_headers("demo", "tok") == {
        "Authorization": "Bearer tok", "X-Kameng-Site": "demo"}
    assert hq_api.site_headers("demo", "tok", "lic")["X-Kameng-License"] == "lic"
    assert hq_api.bearer_token("Bearer  tok ") == "tok"
    assert hq_api.bearer_token("Basic tok") == ""
    assert hq_api.refund_path("P1") == "/api/v1/payments/P1/refund"
    assert hq_api.pay_page_path("P1") == "/pay/P1"


def test_payment_request_validation():
    req = PaymentRequest.model_validate({"order_id": 7, "amount": "100", "notify_url": "n",
                                         "return_url": "r"})
    assert (req.order_id, req.amount, req.currency) == ("7", 100, "CNY")
    with pytest.raises(ValueError, match="greater than 0"):
        PaymentRequest(order_id="o", amount=0, notify_url="n", return_url="r")
