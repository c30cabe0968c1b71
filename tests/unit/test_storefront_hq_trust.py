"""The pure rules of "HQ trusts no site": when a key may leave HQ, which payment URLs a
site may give, and the site-credential registry's contract and reader."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from kameng.contracts.hq_auth import (
    CredentialError,
    SiteCredential,
    new_site_api_token,
    notification_key,
    token_digest,
    valid_site_name,
)
from kameng.contracts.license_token import LicenseClaims
from kameng_storefront.hq.credentials import CredentialRegistry
from kameng_storefront.hq.fulfilment import STATUS, refusal
from kameng_storefront.hq.site_urls import is_internal, url_refusal

NOW = datetime.now(UTC)
CLAIMS = LicenseClaims(site="s1", categories=["game"], regions=["CN-31"],
                       nbf=NOW - timedelta(days=1), exp=NOW + timedelta(days=9),
                       graceUntil=NOW + timedelta(days=12), seq=1)
PRODUCT = {"id": "p", "category": "game", "region": "", "active": True, "cost_fen": 900}
PAID = {"site": "s1", "order_id": "o1", "status": "paid", "currency": "CNY",
        "amount_fen": 900}


def _refusal(product=PRODUCT, payment=PAID, site="s1", order="o1"):
    return refusal(site, order, product, payment, CLAIMS)


def test_a_key_leaves_hq_only_against_its_own_paid_payment():
    assert _refusal() is None
    assert _refusal(payment={**PAID, "amount_fen": 1000}) is None  # more than cost is fine
    assert _refusal(product=None) == "unknown_product"
    assert _refusal(product={**PRODUCT, "active": False}) == "product_inactive"
    assert _refusal(product={**PRODUCT, "category": "gift"}) == "out_of_license_scope"
    assert _refusal(product={**PRODUCT, "region": "CN-11"}) == "out_of_license_scope"
    assert _refusal(payment=None) == "payment_not_found"
    assert _refusal(payment={**PAID, "site": "s2"}) == "payment_not_found"
    assert _refusal(order="o2") == "payment_not_found"
    for status in ("created", "refunded"):
        assert _refusal(payment={**PAID, "status": status}) == "payment_not_paid"
    assert _refusal(payment={**PAID, "currency": "USD"}) == "payment_wrong_currency"
    assert _refusal(payment={**PAID, "amount_fen": 899}) == "payment_below_cost"


def test_no_refusal_reads_as_out_of_stock():
    # The shop refunds its buyer on 409 (out of stock): a refusal must never be a 409.
    assert 409 not in STATUS.values()


SHOP = ["https://shop.example.com", "http://127.0.0.1:8081"]


@pytest.mark.parametrize("url", [
    "https://shop.example.com/api/payments/notify",
    "https://SHOP.example.com./order/K1?x=1#top",
    "https://shop.example.com:443/order/K1",
    "http://127.0.0.1:8081/order/K1",
])
def test_urls_on_the_registered_origin_are_accepted(url):
    assert url_refusal(url, SHOP) is None


@pytest.mark.parametrize("url", [
    "", "javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "//shop.example.com/",
    "http://shop.example.com/order",  # https registered: no downgrade
    "https://shop.example.com:8443/", "https://evil.example/", "https://shop.example.com.evil/",
    "https://user@shop.example.com/", "https://shop.example.com\\@evil.example/",
    "https://shop.example.com/\n", " https://shop.example.com/", "http://127.0.0.1:8082/",
    "http://169.254.169.254/", "http://[::1]:8081/", "http://localhost:8081/",
    "https://shop.example.com:99999/", "https://" + "a" * 3000 + ".example/",
])
def test_other_urls_are_refused(url):
    assert url_refusal(url, SHOP) is not None


def test_internal_addresses_are_named_as_such():
    assert all(is_internal(h) for h in ("10.1.2.3", "::1", "localhost"))
    assert not any(is_internal(h) for h in ("8.8.8.8", "shop.example.com"))
    assert "internal" in (url_refusal("http://10.0.0.1/", SHOP) or "")
    assert url_refusal("http://10.0.0.1/", ["http://10.0.0.1"]) is None  # its own address


def test_credential_contract():
    token = new_site_api_token()
    assert len(token) >= 43
    assert token != new_site_api_token()
    entry = SiteCredential(site="s1", sha256=token_digest(token), createdAt=NOW.isoformat())
    assert entry.accepts(token)
    assert not entry.accepts("")
    assert not entry.accepts(token + "x")
    assert token not in entry.to_json()
    assert SiteCredential.from_json(entry.to_json()) == entry
    assert entry.notification_key() == notification_key(token_digest(token)) != entry.sha256
    with pytest.raises(CredentialError):
        SiteCredential.from_json('{"site": "s1", "sha256": "short", "createdAt": "x"}')
    assert valid_site_name("shop-1")
    assert not any(valid_site_name(n) for n in ("../x", "A", ""))


def test_registry_rereads_a_changed_file_and_refuses_bad_ones(tmp_path):
    reg = CredentialRegistry(tmp_path)
    assert reg.get("s1") is None
    first = SiteCredential(site="s1", sha256="a" * 64, createdAt=NOW.isoformat())
    (tmp_path / "s1").write_text(first.to_json())
    assert reg.get("s1") == first
    second = first.model_copy(update={"sha256": "b" * 64, "state": "suspended"})
    tmp = tmp_path / ".s1"
    tmp.write_text(second.to_json())
    os.replace(tmp, tmp_path / "s1")  # a new inode, as the kubelet's swap gives
    assert reg.get("s1") == second
    (tmp_path / "s2").write_text(first.to_json())  # s1's entry under s2's name
    assert reg.get("s2") is None
    (tmp_path / "s3").write_text("not json")
    assert reg.get("s3") is None
    (tmp_path / "s1").unlink()
    assert reg.get("s1") is None
    assert reg.get("../etc") is None


class _SeqTable:
    """site_license_seq as HQ's statements see it (the real table: test_hq_license_seq.py);
    records which statements ran, since the point is that the usual call writes nothing."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows, self.statements = rows, []

    def connection(self):
        import contextlib

        table = self

        class _Cursor:
            def __init__(self, row):
                self.row = row

            async def fetchone(self):
                return self.row

        class _Conn:
            async def execute(self, query, params):
                if query.startswith("SELECT seq FROM site_license_seq"):
                    table.statements.append("read")
                    site = params[0]
                    return _Cursor({"seq": table.rows[site]} if site in table.rows else None)
                table.statements.append("upsert")
                site, seq = params["site"], params["seq"]
                table.rows[site] = max(seq, table.rows.get(site, seq))
                return _Cursor({"seq": table.rows[site]})

        @contextlib.asynccontextmanager
        async def conn():
            yield _Conn()

        return conn()


@pytest.mark.parametrize(("stored", "seq", "expect", "statements"), [
    ({"s1": 3}, 3, 3, ["read"]),             # the usual call: a read, no row lock
    ({"s1": 3}, 2, 3, ["read"]),             # an older token sees the higher one
    ({"s1": 3}, 4, 4, ["read", "upsert"]),   # a renewal is recorded
    ({}, 1, 1, ["read", "upsert"]),          # the site's first call
    ({"s2": 9}, 1, 1, ["read", "upsert"]),   # per site
])
async def test_license_sequence_is_written_only_when_it_grows(stored, seq, expect, statements):
    from kameng_storefront.hq.site_auth import highest_license_seq

    table = _SeqTable(dict(stored))
    assert await highest_license_seq(table, "s1", seq) == expect  # type: ignore[arg-type]
    assert table.statements == statements
    assert table.rows["s1"] == max(stored.get("s1", seq), seq)
