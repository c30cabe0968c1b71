"""The HQ ⇄ sub-site contract: one encoding of the catalogue, headers, bodies, paths."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

import pytest

from kameng.contracts import hq_api
from kameng.contracts.hq_api import Catalog, CatalogProduct, PaymentRequest
from kameng.contracts.hq_auth import (
    SiteCredential,
    notification_key,
    payment_link_key,
    token_digest,
)


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


# --- pay links ------------------------------------------------------------------------------

_KEYS = {"demo": "k-demo", "other": "k-other"}


def _link(**changes: object) -> hq_api.PaymentLink:
    base = {"order_id": "K1", "amount": 5000, "notify_url": "https://demo.example/n",
            "return_url": "https://demo.example/order/K1", "site": "demo", "expires": 2_000}
    return hq_api.PaymentLink.model_validate({**base, **changes})


def test_a_pay_link_round_trips_and_is_url_safe():
    link = _link()
    token = hq_api.sign_payment_link(_KEYS["demo"], link)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token)
    assert hq_api.verify_payment_link(token, _KEYS.get, now=1_999) == link
    assert hq_api.pay_link_path(token) == f"/pay/link/{token}"


def _refusal(token: str, now: float = 1_000) -> str:
    with pytest.raises(hq_api.LinkError) as err:
        hq_api.verify_payment_link(token, _KEYS.get, now=now)
    return err.value.reason


def _tampered(token: str, **changes: object) -> str:
    payload, _, mac = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**data, **changes}).encode()).decode()
    return forged.rstrip("=") + "." + mac


def test_a_pay_link_is_refused_when_anything_in_it_changes():
    token = hq_api.sign_payment_link(_KEYS["demo"], _link())
    assert _refusal(_tampered(token, amount=1)) == "bad_signature"
    assert _refusal(_tampered(token, order_id="K2")) == "bad_signature"
    assert _refusal(_tampered(token, expires=10**9)) == "bad_signature"
    assert _refusal(_tampered(token, notify_url="https://evil.example/n")) == "bad_signature"
    # The same link claimed for another site is checked with that site's key.
    assert _refusal(_tampered(token, site="other")) == "bad_signature"
    # Signed with another site's key: refused.
    assert _refusal(hq_api.sign_payment_link(_KEYS["other"], _link())) == "bad_signature"
    assert _refusal(token.partition(".")[0] + ".") == "bad_signature"


def test_a_pay_link_expires_and_names_a_known_site():
    token = hq_api.sign_payment_link(_KEYS["demo"], _link(expires=2_000))
    assert hq_api.verify_payment_link(token, _KEYS.get, now=2_000).expires == 2_000
    assert _refusal(token, now=2_001) == "expired"
    assert _refusal(hq_api.sign_payment_link("k", _link(site="gone"))) == "unknown_site"
    for junk in ("", ".", "!!!.x", "bm90IGpzb24.x", "WzFd.x"):  # not JSON, a list
        assert _refusal(junk) == "malformed"


def test_a_wallet_payment_is_never_opened_by_a_link():
    with pytest.raises(ValueError, match="wallet"):
        _link(kind="wallet")
    # Even signed by the right key (a JSON the model never produced), HQ refuses it.
    payload = base64.urlsafe_b64encode(json.dumps({**_link().model_dump(), "kind": "wallet"})
                                       .encode()).decode().rstrip("=")
    mac = hq_api._link_mac(_KEYS["demo"], payload)
    assert _refusal(f"{payload}.{mac}") == "malformed"


def test_link_and_notification_keys_are_separate():

    digest = token_digest("tok")
    assert payment_link_key(digest) == hmac.new(
        digest.encode(), b"kameng-site-paylink:v1", hashlib.sha256).hexdigest()
    entry = SiteCredential(site="demo", sha256=digest, createdAt="2026-01-01T00:00:00Z")
    assert entry.payment_link_key() == payment_link_key(digest)
    assert payment_link_key(digest) != notification_key(digest)
    assert payment_link_key(digest) != payment_link_key(token_digest("tok2"))
    assert len(payment_link_key(digest)) == 64


def test_the_pay_link_wire_format_is_pinned():
    """What another implementation of a site must produce, byte for byte: compact JSON,
    unpadded base64url, HMAC-SHA256 over ``v1.<payload>`` with the link key."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    # 300 links, so that some signatures end in every base64url character.
    for i in range(300):
        link = _link(order_id=f"K{i:04d}")
        payload = b64(json.dumps(link.model_dump(mode="json"), separators=(",", ":")).encode())
        mac = b64(hmac.new(b"k-demo", b"v1." + payload.encode(), hashlib.sha256).digest())
        assert hq_api.sign_payment_link("k-demo", link) == f"{payload}.{mac}"


def test_every_link_survives_its_encoding():
    for i in range(300):
        link = _link(order_id=f"K{i:04d}", amount=100 + i)
        token = hq_api.sign_payment_link(_KEYS["demo"], link)
        assert hq_api.verify_payment_link(token, _KEYS.get, now=0) == link


def test_the_key_is_looked_up_only_for_a_site_name():
    # A payload naming a number for a site is refused before any key is looked up, even
    # where a lookup would answer.
    payload = base64.urlsafe_b64encode(json.dumps({**_link().model_dump(), "site": 5})
                                       .encode()).decode().rstrip("=")
    token = f"{payload}.{hq_api._link_mac('k', payload)}"
    with pytest.raises(hq_api.LinkError) as err:
        hq_api.verify_payment_link(token, lambda site: "k", now=0)
    assert (err.value.reason, str(err.value)) == ("unknown_site", "unknown_site")
    # Anything after the signature is part of the signature, so it no longer matches.
    good = hq_api.sign_payment_link(_KEYS["demo"], _link())
    assert _refusal(good + ".x") == "bad_signature"
