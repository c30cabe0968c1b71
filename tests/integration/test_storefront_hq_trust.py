"""HQ trusts no site, on real PostgreSQL and Redis: a leaked site token cannot drain the
inventory, payment URLs must lie on the site's own registered URL, a site's API token
counts only while the site-credential registry says so, and a pay link opens a payment
only as its site signed it."""

from __future__ import annotations

import base64
import json
import time

import httpx
import psycopg
import pytest

from kameng.contracts.hq_api import (
    FULFIL_PATH,
    NOTIFY_PATH,
    PAY_LINK_SECONDS,
    PAYMENTS_PATH,
    PaymentLink,
    PaymentRequest,
    refund_path,
    sign_payment_link,
)
from kameng.contracts.hq_auth import new_site_api_token, payment_link_key, token_digest
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


# --- pay links: the site signs, HQ opens the payment when the customer follows it ---------


def _link(stack, order_id: str, amount: int = 3000, now: float | None = None, **urls: str
          ) -> str:
    req = PaymentRequest(order_id=order_id, amount=amount,
                         notify_url=urls.get("notify", stack.shop_url + NOTIFY_PATH),
                         return_url=urls.get("ret", f"{stack.shop_url}/order/{order_id}"))
    return state_of(stack.shop_app).payments.pay_link(req, now=now)


def _payments_of(stack, order_id: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(stack.hq_dsn) as conn:
        return conn.execute("SELECT id, status, amount_fen FROM payments WHERE order_id = %s",
                            (order_id,)).fetchall()


def test_checkout_calls_hq_not_at_all_and_the_link_opens_one_payment(stack):
    with httpx.Client(base_url=stack.shop_url, timeout=HTTP_TIMEOUT) as shop:
        token = csrf_from(shop.get("/p/wow-30").text)
        r = shop.post("/checkout", data={"csrf": token, "product": "wow-30",
                                         "contact": "link@example.com"})
    assert r.status_code == 303, r.text[:300]
    link = r.headers["location"]
    assert link.startswith(stack.hq_url + "/pay/link/")
    with psycopg.connect(stack.shop_dsn) as conn:
        oid, payment_id, amount = conn.execute(
            "SELECT id, payment_id, amount_fen FROM orders WHERE pay_url = %s", (link,)
        ).fetchone()
    assert payment_id is None
    assert _payments_of(stack, oid) == []  # checkout made no call to HQ
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        first = payer.get(link)
        assert first.status_code == 200, first.text[:300]
        opened = _payments_of(stack, oid)
        assert [(s, a) for _, s, a in opened] == [("created", amount)]
        assert payer.get(link).status_code == 200
        assert _payments_of(stack, oid) == opened  # a second visit: the same payment
        r = payer.post(link, data={"csrf": csrf_from(first.text)})
    assert r.status_code == 303
    assert r.headers["location"] == f"{stack.shop_url}/order/{oid}"
    assert [s for _, s, _ in _payments_of(stack, oid)] == ["paid"]
    with psycopg.connect(stack.shop_dsn) as conn:
        for _ in range(100):
            row = conn.execute("SELECT status, payment_id FROM orders WHERE id = %s",
                               (oid,)).fetchone()
            if row[0] == "delivered":
                break
            time.sleep(0.05)
    assert row == ("delivered", opened[0][0])  # the payment HQ named when it notified


def test_a_tampered_forged_or_expired_link_opens_nothing(stack):
    link = _link(stack, "LNK-1", 3000)
    head, _, token = link.rpartition("/")
    payload, _, mac = token.partition(".")
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        # Another amount, under the site's signature: the signature no longer matches.
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        cheaper = base64.urlsafe_b64encode(json.dumps({**data, "amount": 1}).encode())
        r = payer.get(f"{head}/{cheaper.decode().rstrip('=')}.{mac}")
        assert r.status_code == 404
        # Signed with another key (a guess, or a rotated-away token's).
        forged = sign_payment_link(payment_link_key(token_digest("guess")),
                                   PaymentLink.model_validate(data))
        assert payer.get(f"{head}/{forged}").status_code == 404
        # Followed after it expired.
        old = _link(stack, "LNK-2", now=time.time() - PAY_LINK_SECONDS - 5)
        r = payer.get(old)
        assert (r.status_code, "LNK-2" in r.text) == (410, False)
        # A pay form posted for a link nobody opened.
        assert payer.post(link, data={"csrf": "x"}).status_code in (400, 404)
    assert _payments_of(stack, "LNK-1") == []
    assert _payments_of(stack, "LNK-2") == []


def test_a_link_pays_only_to_the_sites_registered_url(stack):
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        for urls in ({"notify": "http://169.254.169.254/latest/meta-data/"},
                     {"ret": "https://evil.example/phish"}):
            assert payer.get(_link(stack, "LNK-URL", **urls)).status_code == 400
    assert _payments_of(stack, "LNK-URL") == []


def test_a_suspended_or_rotated_site_opens_no_new_payment(stack):
    opened = _link(stack, "LNK-S1")
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        assert payer.get(opened).status_code == 200
        stack.publish_credential(state="suspended")
        try:
            r = payer.get(_link(stack, "LNK-S2"))
            assert r.status_code == 403
            assert payer.get(opened).status_code == 200  # opened before: still shown
        finally:
            stack.publish_credential()
        new = new_site_api_token()
        stack.publish_credential(token=new)
        try:
            assert payer.get(_link(stack, "LNK-S3")).status_code == 404  # the old key
        finally:
            stack.publish_credential()
    assert _payments_of(stack, "LNK-S2") == []
    assert _payments_of(stack, "LNK-S3") == []
    assert len(_payments_of(stack, "LNK-S1")) == 1
