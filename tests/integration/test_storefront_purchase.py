"""The whole purchase path on real PostgreSQL and Redis: HQ imports keys → the sub-site
syncs with its markup → checkout → sandbox notification (bad signature rejected, replay
changes nothing) → exactly one key → the buyer sees it → events in the stream."""

from __future__ import annotations

import json
import re
import time

import httpx
import psycopg
import pytest
import redis

from kameng.contracts.events import Decision, OrderEvent, decisions_stream, orders_stream
from kameng.contracts.hq_api import refund_path, sign_notification
from kameng.contracts.hq_auth import notification_key, token_digest
from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    csrf_from,
    hq_add_product,
    hq_import_keys,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration

KEYS = [f"STEAM-{i:04d}-SECRET" for i in range(5)]


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    overrides = {"hidden_products": ["steam-hidden"]}
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("lic"),
                   config_overrides=overrides, shop_overrides={"min_withdrawal_fen": 500}) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "steam-100", "game", "100.00", "92.50")
        hq_add_product(hq, "steam-hidden", "game", "10.00", "9.00")
        hq_add_product(hq, "gift-50", "gift", "50.00", "45.00")  # not licensed
        hq_add_product(hq, "bj-card", "mobile", "30.00", "29.00", region="CN-11")  # region
        msg = hq_import_keys(hq, "steam-100", [*KEYS, KEYS[0]])
        assert "imported+5+duplicates+1" in msg
        hq_import_keys(hq, "steam-hidden", ["H-1"])
        hq_import_keys(hq, "gift-50", ["G-1"])
        st.hq = hq  # type: ignore[attr-defined]
        yield st


def _order_status(st, oid):
    with psycopg.connect(st.shop_dsn) as conn:
        row = conn.execute("SELECT status FROM orders WHERE id = %s", (oid,)).fetchone()
    return row[0] if row else None


def _buy(st, shop: httpx.Client, contact: str) -> tuple[str, str]:
    token = csrf_from(shop.get("/p/steam-100").text)
    r = shop.post("/checkout", data={"csrf": token, "product": "steam-100", "contact": contact})
    assert r.status_code == 303, r.text[:500]
    pay_url = r.headers["location"]
    assert pay_url.startswith(st.hq_url + "/pay/")
    with psycopg.connect(st.shop_dsn) as conn:
        oid = conn.execute(
            "SELECT id FROM orders WHERE pay_url = %s", (pay_url,)
        ).fetchone()[0]
    return oid, pay_url


def _pay(pay_url: str) -> str:
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        token = csrf_from(payer.get(pay_url).text)
        r = payer.post(pay_url, data={"csrf": token})
    assert r.status_code == 303
    return r.headers["location"]


def test_catalog_synced_with_markup_and_license_filter(stack):
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    wait_for(lambda: "steam-100" in shop.get("/").text)
    page = shop.get("/").text
    # 92.50 × 1.10 = 101.75; hidden, unlicensed-category and unlicensed-region are absent.
    assert re.search(r'data-product="steam-100".*?¥101\.75', page, re.S)
    for absent in ("steam-hidden", "gift-50", "bj-card"):
        assert absent not in page
    assert shop.get("/p/gift-50").status_code == 404
    assert shop.get("/?lang=en").text.count("steam-100 card") >= 1


def test_catalog_api_conditional_get(stack):
    headers = {
        "X-Kameng-Site": stack.site,
        "Authorization": "Bearer " + state_of(stack.shop_app).settings.hq_api_token,
    }
    r1 = httpx.get(f"{stack.hq_url}/api/v1/catalog", headers=headers)
    assert r1.status_code == 200
    etag = r1.headers["etag"]
    products = {p["id"]: p for p in r1.json()["products"]}
    assert products["steam-100"]["cost"] == 9250
    r2 = httpx.get(f"{stack.hq_url}/api/v1/catalog", headers={**headers, "If-None-Match": etag})
    assert r2.status_code == 304
    bad = {**headers, "Authorization": "Bearer " + "0" * 64}
    assert httpx.get(f"{stack.hq_url}/api/v1/catalog", headers=bad).status_code == 401


def test_purchase_path_end_to_end(stack):
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    wait_for(lambda: "steam-100" in shop.get("/").text)
    oid, pay_url = _buy(stack, shop, "buyer@example.com")
    assert _order_status(stack, oid) == "created"

    # A notification with a bad signature is rejected and changes nothing.
    body = json.dumps({"notification_id": "forged", "payment_id": "P0", "site": stack.site,
                       "order_id": oid, "amount": 10175, "status": "paid"}).encode()
    forged = httpx.post(f"{stack.shop_url}/api/payments/notify", content=body, headers={
        "x-kameng-timestamp": str(int(time.time())), "x-kameng-signature": "v1=" + "ab" * 32})
    assert forged.status_code == 401
    assert _order_status(stack, oid) == "created"

    order_url = _pay(pay_url)
    assert order_url == f"{stack.shop_url}/order/{oid}"
    wait_for(lambda: _order_status(stack, oid) == "delivered")
    page = shop.get(f"/order/{oid}").text
    shown = re.search(r'id="card-key">([^<]+)<', page).group(1)
    assert shown in KEYS

    # Replaying HQ's (correctly signed) notification changes nothing.
    with psycopg.connect(stack.hq_dsn) as conn:
        pid = conn.execute("SELECT id FROM payments WHERE order_id = %s", (oid,)).fetchone()[0]
    secret = notification_key(token_digest(stack.api_token))
    replay = json.dumps({"notification_id": f"{pid}:paid", "payment_id": pid,
                         "site": stack.site, "order_id": oid, "amount": 10175,
                         "currency": "CNY", "status": "paid"}).encode()
    ts = int(time.time())
    headers = {"x-kameng-timestamp": str(ts),
               "x-kameng-signature": sign_notification(secret, ts, replay)}
    r = httpx.post(f"{stack.shop_url}/api/payments/notify", content=replay, headers=headers)
    assert r.status_code == 200
    assert r.json()["result"] == "duplicate"
    stale = ts - 3600
    r = httpx.post(f"{stack.shop_url}/api/payments/notify", content=replay, headers={
        "x-kameng-timestamp": str(stale),
        "x-kameng-signature": sign_notification(secret, stale, replay)})
    assert r.status_code == 401

    # Exactly one key left HQ for this order, it is the one shown, stored encrypted.
    with psycopg.connect(stack.hq_dsn) as conn:
        sold = conn.execute(
            "SELECT secret_enc FROM card_keys WHERE site = %s AND order_ref = %s",
            (stack.site, oid)).fetchall()
        assert len(sold) == 1
        assert not any(k in str(conn.execute("SELECT secret_enc FROM card_keys").fetchall())
                       for k in KEYS)
    with psycopg.connect(stack.shop_dsn) as conn:
        key_enc, contact_enc = conn.execute(
            "SELECT key_enc, contact_enc FROM orders WHERE id = %s", (oid,)).fetchone()
    assert shown not in key_enc
    assert key_enc.startswith("s1:")
    assert "buyer@example.com" not in contact_enc

    # A second browser sees the key only with order number + contact.
    other = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    assert other.get(f"/order/{oid}").status_code == 303
    token = csrf_from(other.get("/lookup").text)
    r = other.post("/lookup", data={"csrf": token, "order": oid, "contact": "wrong@example.com"})
    assert r.status_code == 404
    r = other.post("/lookup", data={"csrf": token, "order": oid, "contact": "Buyer@Example.com"})
    assert r.status_code == 303
    assert shown in other.get(f"/order/{oid}").text

    # The events are in the site's stream, per the contract, once each.
    r = redis.Redis.from_url(stack.redis_url)
    entries = r.xrange(orders_stream(stack.site))
    events = [OrderEvent.from_fields(f) for _, f in entries]
    mine = [e for e in events if e.order_id == oid]
    assert [e.event for e in mine] == ["order.created", "order.paid", "order.delivered"]
    assert {e.event_id for e in mine} == {f"{oid}:order.created", f"{oid}:order.paid",
                                          f"{oid}:order.delivered"}
    assert all(e.amount == 10175 and e.site == stack.site and e.category == "game"
               for e in mine)
    assert all(len(e.customer) == 64 and "buyer" not in e.customer for e in mine)


def test_freeze_decision_holds_delivery_until_allowed(stack):
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    oid, pay_url = _buy(stack, shop, "risky@example.com")
    r = redis.Redis.from_url(stack.redis_url)
    r.xadd(decisions_stream(stack.site),
           Decision(order_id=oid, action="freeze", rule="velocity").to_fields())
    wait_for(lambda: _risk(stack, oid) == "freeze")
    _pay(pay_url)
    wait_for(lambda: _order_status(stack, oid) == "frozen")
    time.sleep(1.0)
    assert _order_status(stack, oid) == "frozen"
    assert "card-key" not in shop.get(f"/order/{oid}").text
    r.xadd(decisions_stream(stack.site),
           Decision(order_id=oid, action="allow", rule="manual-review").to_fields())
    wait_for(lambda: _order_status(stack, oid) == "delivered")


def _risk(st, oid):
    with psycopg.connect(st.shop_dsn) as conn:
        return conn.execute("SELECT risk_action FROM orders WHERE id = %s", (oid,)).fetchone()[0]


def test_probes_and_metrics(stack):
    for base in (stack.hq_ops_url, stack.shop_ops_url):
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    metrics = httpx.get(f"{stack.shop_ops_url}/metrics").text
    assert 'kameng_storefront_orders_total{status="delivered"}' in metrics
    assert 'kameng_storefront_license_mode{mode="normal"} 1.0' in metrics


def test_csrf_required(stack):
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    shop.get("/")
    r = shop.post("/checkout", data={"csrf": "nope", "product": "steam-100", "contact": "a@b"})
    assert r.status_code == 400


def test_coupon_discounts_margin_only_and_announcement_shows(stack):
    from tests.support.storefront import admin_csrf

    admin = staff_client(stack.shop_url, stack.members["site-admin"])
    r = admin.post("/admin/coupons", data={"csrf": admin_csrf(admin), "code": "half",
                                           "percent_off": "50", "max_uses": "1"})
    assert r.status_code == 303
    r = admin.post("/admin/announcements", data={"csrf": admin_csrf(admin),
                                                 "title": "双十一", "body": "全场九折"})
    assert r.status_code == 303
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    assert "全场九折" in shop.get("/").text
    token = csrf_from(shop.get("/p/steam-100").text)
    r = shop.post("/checkout", data={"csrf": token, "product": "steam-100",
                                     "contact": "c1@example.com", "coupon": "HALF"})
    assert r.status_code == 303
    with psycopg.connect(stack.shop_dsn) as conn:
        amount = conn.execute("SELECT amount_fen FROM orders WHERE pay_url = %s",
                              (r.headers["location"],)).fetchone()[0]
    assert amount == 9250  # 50% off 101.75 would be below the 92.50 cost: clamped at cost
    # An unpaid order does not use the coupon up: a second buyer still gets it (the use
    # is counted at payment; test_storefront_money covers the rest).
    r = shop.post("/checkout", data={"csrf": token, "product": "steam-100",
                                     "contact": "c2@example.com", "coupon": "HALF"})
    assert r.status_code == 303
    with psycopg.connect(stack.shop_dsn) as conn:
        assert conn.execute("SELECT used FROM coupons WHERE code = 'HALF'").fetchone()[0] == 0


def _balance(client: httpx.Client) -> str:
    return re.search(r'id="balance">(-?[\d.]+)<', client.get("/admin/finance").text).group(1)


def test_refund_after_delivery_and_withdrawal_is_a_dispute(stack):
    """A delivered order is never refunded by the shop: the buyer holds the key. After the
    partner withdrew its whole margin, a refund would drive the balance negative and make
    HQ absorb the cost; instead a dispute is recorded for HQ and no money moves."""
    from tests.support.storefront import admin_csrf

    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    oid, pay_url = _buy(stack, shop, "refund-me@example.com")
    _pay(pay_url)
    wait_for(lambda: _order_status(stack, oid) == "delivered")

    finance = staff_client(stack.shop_url, stack.members["finance"])
    assert _balance(finance) == "27.75"  # three delivered orders × 9.25 margin
    r = finance.post("/admin/withdrawals", data={"csrf": admin_csrf(finance), "amount": "20.00"})
    assert "withdrawal+requested" in r.headers["location"]
    r = finance.post("/admin/withdrawals", data={"csrf": admin_csrf(finance), "amount": "20.00"})
    assert "exceeds+balance" in r.headers["location"]  # 7.75 left

    admin = staff_client(stack.shop_url, stack.members["site-admin"])
    r = admin.post(f"/admin/orders/{oid}/refund", data={"csrf": admin_csrf(admin)})
    assert "refund+disputed" in r.headers["location"]
    r = admin.post(f"/admin/orders/{oid}/refund", data={"csrf": admin_csrf(admin)})
    assert "refund+disputed" in r.headers["location"]  # asking twice: still one dispute
    assert _order_status(stack, oid) == "delivered"
    assert _balance(finance) == "7.75"  # never negative, unchanged
    assert "dispute" in admin.get("/admin/orders").text
    with psycopg.connect(stack.shop_dsn) as conn:
        disputes = conn.execute("SELECT status, opened_by FROM order_disputes"
                                " WHERE order_id = %s", (oid,)).fetchall()
    assert disputes == [("open", stack.members["site-admin"])]

    # The other path, HQ's refund API asked directly with the site's own credentials,
    # applies the same rule: a key was handed out for the order, so no refund.
    with psycopg.connect(stack.hq_dsn) as conn:
        pid = conn.execute("SELECT id FROM payments WHERE order_id = %s", (oid,)).fetchone()[0]
    hq_headers = {"X-Kameng-Site": stack.site,
                  "Authorization": "Bearer " + state_of(stack.shop_app).settings.hq_api_token,
                  "X-Kameng-License": state_of(stack.shop_app).guard().token}
    r = httpx.post(stack.hq_url + refund_path(pid), headers=hq_headers)
    assert r.status_code == 409
    with psycopg.connect(stack.hq_dsn) as conn:
        status = conn.execute("SELECT status FROM payments WHERE order_id = %s",
                              (oid,)).fetchone()[0]
    assert status == "paid"
    events = [OrderEvent.from_fields(f) for _, f in
              redis.Redis.from_url(stack.redis_url).xrange(orders_stream(stack.site))]
    assert not any(e.event == "order.refunded" and e.order_id == oid for e in events)
    disputed = [e for e in events if e.event == "order.disputed" and e.order_id == oid]
    assert len(disputed) == 1  # HQ learns of it once, however often staff asked
    assert disputed[0].amount == 10175
    withdrawals = [e for e in events if e.event == "withdrawal.requested"]
    assert len(withdrawals) == 1
    assert withdrawals[0].amount == 2000


def _clear_throttle(stack) -> None:
    r = redis.Redis.from_url(stack.redis_url)
    for k in r.scan_iter(f"site:{stack.site}:throttle:*"):
        r.delete(k)


def test_order_lookup_is_throttled(stack):
    # Failures from one address against one order are limited (counted in Redis, shared by
    # replicas; tests/integration/test_throttle.py covers the rest).
    _clear_throttle(stack)
    c = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    token = csrf_from(c.get("/lookup").text)
    codes = [c.post("/lookup", data={"csrf": token, "order": "K1", "contact": "x@y"}
                    ).status_code for i in range(11)]
    assert codes == [404] * 10 + [429]
    _clear_throttle(stack)
