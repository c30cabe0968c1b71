"""HQ trusts no site, on real PostgreSQL and Redis: a leaked site token cannot drain the
inventory, payment URLs must lie on the site's own registered URL, and a site's API token
counts only while the site-credential registry says so."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from kameng.contracts.hq_api import FULFIL_PATH, NOTIFY_PATH, PAYMENTS_PATH, refund_path
from kameng.contracts.hq_auth import new_site_api_token
from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    csrf_from,
    hq_add_product,
    hq_import_keys,
    record_paid_payment,
    run_stack,
    staff_client,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("trust")) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "wow-30", "game", "30.00", "28.00")
        hq_import_keys(hq, "wow-30", [f"WOW-{i:02d}" for i in range(10)])
        yield st


def _license(stack) -> str:
    return state_of(stack.shop_app).guard().token


def _fulfil(stack, order_id: str, product: str = "wow-30") -> httpx.Response:
    return httpx.post(stack.hq_url + FULFIL_PATH, headers=stack.api_headers(_license(stack)),
                      json={"order_id": order_id, "product_id": product})


def _open_payment(stack, order_id: str, amount: int, currency: str = "CNY",
                  notify: str | None = None, ret: str | None = None) -> httpx.Response:
    return httpx.post(stack.hq_url + PAYMENTS_PATH, headers=stack.api_headers(_license(stack)),
                      json={"order_id": order_id, "amount": amount, "currency": currency,
                            "notify_url": notify or stack.shop_url + NOTIFY_PATH,
                            "return_url": ret or f"{stack.shop_url}/order/{order_id}"})


def _pay(pay_url: str) -> None:
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        token = csrf_from(payer.get(pay_url).text)
        assert payer.post(pay_url, data={"csrf": token}).status_code == 303


def _sold(stack) -> int:
    with psycopg.connect(stack.hq_dsn) as conn:
        return conn.execute("SELECT count(*) FROM card_keys WHERE status = 'sold'").fetchone()[0]


def test_leaked_site_token_cannot_drain_inventory(stack):
    """An attacker holding the site's API token and license token names order ids HQ
    never saw paid: no key leaves HQ."""
    before = _sold(stack)
    for i in range(5):
        r = _fulfil(stack, f"LEAK-{i}")
        assert r.status_code == 402, r.text
        assert r.json()["error"] == "payment_not_found"
    assert _sold(stack) == before


def test_fulfilment_needs_a_paid_payment_of_that_order_covering_the_cost(stack):
    before = _sold(stack)
    # Opened but never paid.
    assert _open_payment(stack, "U-1", 3000).status_code == 200
    assert _fulfil(stack, "U-1").json()["error"] == "payment_not_paid"
    # Paid, but for less than HQ's cost of the product asked for.
    cheap = _open_payment(stack, "C-1", 1)
    _pay(cheap.json()["pay_url"])
    assert _fulfil(stack, "C-1").json()["error"] == "payment_below_cost"
    # Paid in another currency than the catalogue's.
    usd = _open_payment(stack, "USD-1", 3000, currency="USD")
    _pay(usd.json()["pay_url"])
    assert _fulfil(stack, "USD-1").json()["error"] == "payment_wrong_currency"
    # Refunded before the key was asked for.
    record_paid_payment(stack, "R-1", 3000)
    with psycopg.connect(stack.hq_dsn) as conn:
        pid = conn.execute("SELECT id FROM payments WHERE order_id = 'R-1'").fetchone()[0]
    r = httpx.post(stack.hq_url + refund_path(pid), headers=stack.api_headers(_license(stack)))
    assert r.status_code == 200
    assert _fulfil(stack, "R-1").json()["error"] == "payment_not_paid"
    assert _sold(stack) == before
    # The honest path: paid at HQ, at least the cost, then exactly one key.
    ok = _open_payment(stack, "OK-1", 2800)
    _pay(ok.json()["pay_url"])
    first = _fulfil(stack, "OK-1")
    assert first.status_code == 200, first.text
    assert _fulfil(stack, "OK-1").json()["secret"] == first.json()["secret"]  # a retry
    assert _sold(stack) == before + 1


def test_inactive_product_is_not_fulfilled(stack):
    hq = staff_client(stack.hq_url, "admin@hq.local")
    hq_add_product(hq, "old-10", "game", "10.00", "9.00")
    hq_import_keys(hq, "old-10", ["OLD-1"])
    with psycopg.connect(stack.hq_dsn) as conn:
        conn.execute("UPDATE products SET active = false WHERE id = 'old-10'")
    record_paid_payment(stack, "I-1", 1000)
    r = _fulfil(stack, "I-1", product="old-10")
    assert (r.status_code, r.json()["error"]) == (403, "product_inactive")


@pytest.mark.parametrize(("field", "url"), [
    ("notify_url", "http://169.254.169.254/latest/meta-data/"),  # cloud metadata (SSRF)
    ("notify_url", "http://127.0.0.1:6379/"),  # loopback, but not the site's port
    ("notify_url", "http://10.0.0.1/api/payments/notify"),
    ("notify_url", "https://evil.example/api/payments/notify"),
    ("notify_url", "file:///etc/passwd"),
    ("return_url", "javascript:alert(document.cookie)"),
    ("return_url", "https://evil.example/phish"),
    ("return_url", "//evil.example/"),
    ("return_url", "http://SITE\\@evil.example/"),  # parsers disagree on backslashes
    ("return_url", "http://user:pw@SITE/order/1"),  # user-info
])
def test_payment_urls_must_be_on_the_sites_registered_url(stack, field, url):
    url = url.replace("SITE", stack.shop_url.removeprefix("http://"))
    kwargs = {"notify": url} if field == "notify_url" else {"ret": url}
    r = _open_payment(stack, f"URL-{abs(hash(url))}", 3000, **kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"bad_{field}"
    with psycopg.connect(stack.hq_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM payments WHERE notify_url = %s"
                            " OR return_url = %s", (url, url)).fetchone()[0] == 0


def test_site_credential_registry_is_the_only_way_in(stack):
    catalog = stack.hq_url + "/api/v1/catalog"
    assert httpx.get(catalog, headers=stack.api_headers()).status_code == 200
    # Suspended: the site can refund its buyers, nothing else.
    record_paid_payment(stack, "S-1", 3000)
    with psycopg.connect(stack.hq_dsn) as conn:
        pid = conn.execute("SELECT id FROM payments WHERE order_id = 'S-1'").fetchone()[0]
    stack.publish_credential(state="suspended")
    r = httpx.get(catalog, headers=stack.api_headers())
    assert (r.status_code, r.json()["error"]) == (403, "site_suspended")
    assert _fulfil(stack, "S-1").status_code == 403
    r = httpx.post(stack.hq_url + refund_path(pid), headers=stack.api_headers(_license(stack)))
    assert r.status_code == 200
    # Rotated: the old token is dead at once, the new one works.
    new = new_site_api_token()
    stack.publish_credential(token=new)
    assert httpx.get(catalog, headers=stack.api_headers()).status_code == 401
    old, stack.api_token = stack.api_token, new
    try:
        assert httpx.get(catalog, headers=stack.api_headers()).status_code == 200
    finally:
        stack.api_token = old
        stack.publish_credential()
    # Deleted: no entry, no access; and no file name can be smuggled through the header.
    (stack.credentials_dir / stack.site).unlink()
    try:
        assert httpx.get(catalog, headers=stack.api_headers()).status_code == 401
        for site in ("../" + stack.site, stack.site + "/", "."):
            headers = {**stack.api_headers(), "X-Kameng-Site": site}
            assert httpx.get(catalog, headers=headers).status_code == 401
    finally:
        stack.publish_credential()
    assert httpx.get(catalog, headers=stack.api_headers()).status_code == 200
