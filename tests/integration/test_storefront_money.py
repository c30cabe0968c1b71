"""Money correctness on real PostgreSQL and Redis with real HQ and shop apps:

- every paid order ends delivered or refunded, also while the shop is suspended;
- the delivery sweep is fair: orders that keep failing never starve newer ones;
- two replicas of a shop never deliver one order at once;
- a coupon is used when an order is paid, never more often than allowed;
- HQ's sandbox pay page runs only where a person enabled it, and says so.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import psycopg
import pytest

from kameng.contracts.hq_api import FULFIL_PATH
from kameng.contracts.license_token import sign_token
from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    HoldingProxy,
    admin_csrf,
    csrf_from,
    hq_add_product,
    hq_import_keys,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FAST_SWEEP = {"delivery_sweep_seconds": 0.3, "delivery_retry_seconds": 0.2}


def _stock(st, product: str, keys: int, cost: str = "9.00") -> None:
    hq = staff_client(st.hq_url, "admin@hq.local")
    hq_add_product(hq, product, "game", "10.00", cost)
    if keys:
        hq_import_keys(hq, product, [f"{product.upper()}-{i:03d}" for i in range(keys)])
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
    wait_for(lambda: f'data-product="{product}"' in shop.get("/").text, timeout=30)


async def _checkout(st, product: str, contact: str, coupon: str = "") -> tuple[str, str]:
    """A customer with their own cookies: product page → checkout. (order id, pay URL)."""
    async with httpx.AsyncClient(base_url=st.shop_url, timeout=60) as shop:
        page = await shop.get(f"/p/{product}")
        r = await shop.post("/checkout", data={"csrf": _CSRF.search(page.text).group(1),
                                               "product": product, "contact": contact,
                                               "coupon": coupon})
        assert r.status_code == 303, (r.status_code, r.text[:300])
        pay_url = r.headers["location"]
    async with await psycopg.AsyncConnection.connect(st.shop_dsn) as conn:
        row = await (await conn.execute("SELECT id FROM orders WHERE pay_url = %s",
                                        (pay_url,))).fetchone()
    return row[0], pay_url


async def _pay(pay_url: str) -> None:
    async with httpx.AsyncClient(timeout=60) as payer:
        page = await payer.get(pay_url)
        r = await payer.post(pay_url, data={"csrf": _CSRF.search(page.text).group(1)})
        assert r.status_code == 303, r.status_code


def _orders(st, where: str = "true", params: tuple = ()) -> dict[str, dict]:
    with psycopg.connect(st.shop_dsn) as conn:
        cur = conn.execute(f"SELECT * FROM orders WHERE {where}", params)
        cols = [c.name for c in cur.description]
        return {r[0]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}


def _payment_ids(st, order_ids) -> dict[str, str]:
    with psycopg.connect(st.hq_dsn) as conn:
        return dict(conn.execute("SELECT id, order_id FROM payments WHERE order_id = ANY(%s)",
                                 (list(order_ids),)).fetchall())


def _hq_payment_status(st, order_id: str) -> str:
    with psycopg.connect(st.hq_dsn) as conn:
        return conn.execute("SELECT status FROM payments WHERE order_id = %s",
                            (order_id,)).fetchone()[0]


def _keys_sold(st, order_id: str) -> int:
    with psycopg.connect(st.hq_dsn) as conn:
        return conn.execute("SELECT count(*) FROM card_keys WHERE site = %s AND order_ref = %s",
                            (st.site, order_id)).fetchone()[0]


def _license_seq(st) -> int:
    guard = state_of(st.shop_app).guard()
    guard.mode()  # re-reads the mounted token when it changed
    return guard.claims.seq if guard.claims else 0


def _balance_fen(st) -> int:
    with psycopg.connect(st.shop_dsn) as conn:
        return conn.execute(
            "SELECT (SELECT coalesce(sum(amount_fen - unit_cost_fen), 0) FROM orders"
            " WHERE status = 'delivered') - (SELECT coalesce(sum(amount_fen), 0)"
            " FROM withdrawals WHERE status <> 'rejected')").fetchone()[0]


def test_paid_orders_hq_refuses_end_refunded_even_while_suspended(
        pg_admin_dsn, redis_url, tmp_path):
    """HQ refuses to fulfil for a suspended license (transient: retried, capped, then
    refunded) and for a product outside the license (final: refunded at once). The shop
    is suspended meanwhile and still refunds: the sweep runs whatever the license says."""
    shop_settings = {**FAST_SWEEP, "delivery_max_attempts": 3}
    with run_stack(pg_admin_dsn, redis_url, tmp_path, shop_overrides=shop_settings) as st:
        _stock(st, "susp-10", keys=5)
        oid, pay_url = asyncio.run(_checkout(st, "susp-10", "s1@example.com"))
        oid2, pay_url2 = asyncio.run(_checkout(st, "susp-10", "s2@example.com"))

        # HQ narrows the license to another category: out of scope is a final refusal.
        st.write_license(sign_token(st.claims(categories=["mobile"], seq=2), st.signing_key))
        wait_for(lambda: _license_seq(st) == 2)
        asyncio.run(_pay(pay_url2))
        order = wait_for(lambda: _orders(st, "id = %s AND status = 'refunded'", (oid2,)))[oid2]
        assert order["attempts"] == 1  # no retries of a final refusal
        assert order["refund_reason"] == "refused:out_of_license_scope"

        # Now the license is suspended: the shop answers 503, HQ refuses fulfilment.
        st.write_license(sign_token(st.claims(suspended=True, seq=3), st.signing_key))
        wait_for(lambda: httpx.get(st.shop_url + "/").status_code == 503)
        asyncio.run(_pay(pay_url))
        order = wait_for(lambda: _orders(st, "id = %s AND status = 'refunded'", (oid,)),
                         timeout=30)[oid]
        assert order["attempts"] == 3  # retried up to the cap, then refunded
        assert order["refund_reason"] == "gave_up:license_suspended"
        for o in (oid, oid2):
            assert _hq_payment_status(st, o) == "refunded"
            assert _keys_sold(st, o) == 0
        assert httpx.get(st.shop_url + "/").status_code == 503  # still suspended
        assert _balance_fen(st) == 0
        assert not _orders(st, "status = 'paid'")


def test_sweep_is_fair_orders_that_keep_failing_never_starve_new_ones(
        pg_admin_dsn, redis_url, tmp_path):
    """55 older paid orders whose fulfilment always fails (a gateway in front of HQ answers
    them with its own page instead of HQ's JSON) and one newer order whose first attempt
    failed (503): the newer one is delivered on a later sweep instead of waiting forever
    behind the failing ones (taken first every time, and aborting the sweep)."""
    poisoned: set[str] = set()
    good_failures: list[str] = []

    with HoldingProxy() as proxy:
        def fail(path: str, body: bytes) -> int | None:
            if path != FULFIL_PATH:
                return None
            order = json.loads(body)["order_id"]
            if order in poisoned:
                return 200  # with a page that is not HQ's answer
            if not good_failures:  # the newer order's first attempt fails once
                good_failures.append(order)
                return 503
            return None

        proxy.fail_with = fail
        shop_settings = {**FAST_SWEEP, "delivery_retry_seconds": 1.0,
                         "delivery_max_attempts": 1000}
        with run_stack(pg_admin_dsn, redis_url, tmp_path, shop_overrides=shop_settings,
                       shop_hq_url=proxy.url) as st:
            proxy.target = st.hq_url
            _stock(st, "poison-1", keys=60)
            _stock(st, "fine-1", keys=1)

            async def poison_orders() -> list[str]:
                made = await asyncio.gather(*(
                    _checkout(st, "poison-1", f"p{i}@example.com") for i in range(55)))
                poisoned.update(oid for oid, _ in made)
                await asyncio.gather(*(_pay(url) for _, url in made))
                return [oid for oid, _ in made]

            asyncio.run(poison_orders())
            wait_for(lambda: len(_orders(st, "status = 'paid'")) == 55, timeout=60)
            time.sleep(1.0)  # the newer order is paid clearly after the failing ones
            oid, pay_url = asyncio.run(_checkout(st, "fine-1", "good@example.com"))
            asyncio.run(_pay(pay_url))
            wait_for(lambda: good_failures, timeout=20)
            start = time.monotonic()
            wait_for(lambda: _orders(st, "id = %s AND status = 'delivered'", (oid,)),
                     timeout=20)
            waited = time.monotonic() - start
            assert waited < 20
            # The failing ones are still being retried (backing off), none delivered.
            rows = _orders(st, "id = ANY(%s)", (list(poisoned),))
            assert {r["status"] for r in rows.values()} == {"paid"}
            assert all(r["attempts"] >= 1 for r in rows.values())


def test_two_replicas_deliver_one_order_once(pg_admin_dsn, redis_url, tmp_path):
    """Two instances of one shop on one database, the last key in stock: while the first
    delivery is in flight (held at a proxy in front of HQ), the other replica's sweeps and
    the first's own never start a second one. The buyer gets the key, nobody is refunded."""
    with HoldingProxy(hold_paths=(FULFIL_PATH,)) as proxy, \
            run_stack(pg_admin_dsn, redis_url, tmp_path, shop_replicas=2,
                      shop_overrides=FAST_SWEEP, shop_hq_url=proxy.url) as st:
        proxy.target = st.hq_url
        _stock(st, "last-1", keys=1)
        oid, pay_url = asyncio.run(_checkout(st, "last-1", "one@example.com"))
        proxy.hold()
        asyncio.run(_pay(pay_url))
        wait_for(lambda: proxy.arrivals, timeout=20)
        # Long enough for every sweep of both replicas to have looked at the order (the
        # sweeps run every 0.3 s here; a shop without a claim re-drives after ≤ 15 s).
        time.sleep(16)
        fulfils = [json.loads(body)["order_id"] for _, body in proxy.arrivals]
        proxy.release()
        order = wait_for(lambda: _orders(st, "id = %s AND status <> 'paid'", (oid,)),
                         timeout=30)[oid]
        assert fulfils == [oid]  # single flight across both replicas
        assert order["status"] == "delivered"
        assert order["key_enc"]
        assert _keys_sold(st, oid) == 1
        assert _hq_payment_status(st, oid) == "paid"
        time.sleep(1.0)  # nothing else happens afterwards either
        assert _orders(st, "id = %s", (oid,))[oid]["status"] == "delivered"
        assert len(proxy.arrivals) == 1


def test_coupon_is_used_at_payment_never_more_than_allowed(pg_admin_dsn, redis_url, tmp_path):
    with run_stack(pg_admin_dsn, redis_url, tmp_path, shop_overrides=FAST_SWEEP) as st:
        _stock(st, "cpn-10", keys=10, cost="5.00")
        admin = staff_client(st.shop_url, st.members["site-admin"])
        r = admin.post("/admin/coupons", data={"csrf": admin_csrf(admin), "code": "twice",
                                               "percent_off": "10", "max_uses": "2"})
        assert r.status_code == 303

        # Six unpaid orders with the coupon: none of them uses it up.
        made = [asyncio.run(_checkout(st, "cpn-10", f"c{i}@example.com", "TWICE"))
                for i in range(6)]
        with psycopg.connect(st.shop_dsn) as conn:
            assert conn.execute("SELECT used FROM coupons WHERE code = 'TWICE'"
                                ).fetchone()[0] == 0

        # All six pay at once: exactly two get the discount; the others paid a price that
        # is no longer on offer, so they are refunded, not delivered.
        async def pay_all() -> None:
            await asyncio.gather(*(_pay(url) for _, url in made))

        asyncio.run(pay_all())
        ids = [oid for oid, _ in made]
        orders = wait_for(lambda: (o := _orders(st, "id = ANY(%s)", (ids,))) and all(
            r["status"] in ("delivered", "refunded") for r in o.values()) and o, timeout=30)
        statuses = sorted(r["status"] for r in orders.values())
        assert statuses == ["delivered"] * 2 + ["refunded"] * 4
        assert all(r["coupon_used"] == (r["status"] == "delivered") for r in orders.values())
        assert {r["refund_reason"] for r in orders.values() if r["status"] == "refunded"} == {
            "coupon_used_up"}
        with psycopg.connect(st.shop_dsn) as conn:
            assert conn.execute("SELECT used FROM coupons WHERE code = 'TWICE'"
                                ).fetchone()[0] == 2
        # Used up now: a new checkout with it is refused.
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
        token = csrf_from(shop.get("/p/cpn-10").text)
        r = shop.post("/checkout", data={"csrf": token, "product": "cpn-10",
                                         "contact": "late@example.com", "coupon": "TWICE"})
        assert r.status_code == 400


def test_sandbox_pay_page_needs_an_explicit_enable(pg_admin_dsn, redis_url, tmp_path):
    with run_stack(pg_admin_dsn, redis_url, tmp_path,
                   hq_overrides={"sandbox_payments": False}) as st:
        _stock(st, "sbx-10", keys=1)
        # HQ opens no payment that nobody could pay: the pay link the shop signed (checkout
        # asks HQ nothing) meets the disabled channel's page, and no payment is opened.
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
        token = csrf_from(shop.get("/p/sbx-10").text)
        r = shop.post("/checkout", data={"csrf": token, "product": "sbx-10",
                                         "contact": "x@example.com"})
        assert r.status_code == 303
        page = httpx.get(r.headers["location"], timeout=HTTP_TIMEOUT)
        assert page.status_code == 503
        assert "sandbox" in page.text.lower() or "沙箱" in page.text
        with psycopg.connect(st.hq_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] == 0
        # A payment opened earlier (while it was enabled) cannot be confirmed either.
        with psycopg.connect(st.hq_dsn) as conn:
            conn.execute("INSERT INTO payments (id, site, order_id, amount_fen, notify_url,"
                         " return_url) VALUES ('PSBX1', %s, 'KSBX1', 1100, %s, %s)",
                         (st.site, st.shop_url + "/api/payments/notify", st.shop_url))
        pay_url = st.hq_url + "/pay/PSBX1"
        with httpx.Client(timeout=30) as payer:
            page = payer.get(pay_url)
            assert page.status_code == 503
            assert 'id="pay"' not in page.text
            assert "sandbox" in page.text.lower() or "沙箱" in page.text
            # Not even a forged form post confirms a payment.
            r = payer.post(pay_url, data={"csrf": "x"})
            assert r.status_code == 503
        with psycopg.connect(st.hq_dsn) as conn:
            assert conn.execute("SELECT status FROM payments WHERE id = 'PSBX1'"
                                ).fetchone()[0] == "created"
        metrics = httpx.get(st.hq_ops_url + "/metrics").text
        assert "kameng_storefront_sandbox_payments_enabled 0.0" in metrics

    with run_stack(pg_admin_dsn, redis_url, tmp_path) as st:  # enabled, as tests do
        _stock(st, "sbx-10", keys=1)
        _, pay_url = asyncio.run(_checkout(st, "sbx-10", "y@example.com"))
        page = httpx.get(pay_url).text
        assert 'id="sandbox-banner"' in page
        assert 'id="pay"' in page
        metrics = httpx.get(st.hq_ops_url + "/metrics").text
        assert "kameng_storefront_sandbox_payments_enabled 1.0" in metrics


def test_hq_notification_sweep_is_fair(pg_admin_dsn, redis_url, tmp_path):
    """55 older paid payments whose site never answers (connection refused) and one newer
    payment whose notification was lost: HQ's sweep still notifies the newer one (and the
    shop delivers) instead of re-sending the same dead ones first every time."""
    with run_stack(pg_admin_dsn, redis_url, tmp_path) as st:
        _stock(st, "ntf-10", keys=1)
        with psycopg.connect(st.hq_dsn) as conn:
            for i in range(55):
                conn.execute(
                    "INSERT INTO payments (id, site, order_id, amount_fen, status, notify_url,"
                    " return_url, paid_at) VALUES (%s, %s, %s, 100, 'paid', %s, %s,"
                    " now() - interval '1 hour')",
                    (f"PDEAD{i:03d}", st.site, f"KDEAD{i:03d}",
                     "http://127.0.0.1:9/api/payments/notify", "http://127.0.0.1:9/"))
        oid, pay_url = asyncio.run(_checkout(st, "ntf-10", "late@example.com"))
        assert httpx.get(pay_url, timeout=HTTP_TIMEOUT).status_code == 200  # opened
        # Paid, but HQ never sent the notification (it restarted right then, say).
        with psycopg.connect(st.hq_dsn) as conn:
            conn.execute("UPDATE payments SET status = 'paid', paid_at = now() - interval"
                         " '20 seconds' WHERE order_id = %s", (oid,))
        wait_for(lambda: _orders(st, "id = %s AND status = 'delivered'", (oid,)), timeout=25)
        with psycopg.connect(st.hq_dsn) as conn:
            dead = conn.execute("SELECT count(*), min(notify_attempts) FROM payments"
                                " WHERE id LIKE 'PDEAD%%' AND notified_at IS NULL").fetchone()
        assert dead[0] == 55
        assert dead[1] >= 1  # every dead one was tried, and backs off
