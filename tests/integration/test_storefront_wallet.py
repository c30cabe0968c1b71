"""The customer wallet on real PostgreSQL and Redis with real HQ and shop apps:

- a top-up through HQ's sandbox channel raises the balance once, when HQ's signed
  notification says paid (replays and forgeries change nothing), with one ``topup`` event;
- paying from the balance is atomic with the order's change, emits ``order.paid`` with
  ``funding=wallet``, and an insufficient balance is refused with a clear message;
- a refund before delivery returns the money to the wallet exactly once; after delivery it
  is a dispute; the customer and the back office (``customers:read``) see the movements;
- HQ hands keys out only against money it holds: never against a top-up, never for a
  wallet payment the site's escrow does not cover (a tenant editing its own database);
- many payments at once from one wallet never overdraw it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import psycopg
import pytest
import redis

from kameng.contracts.events import OrderEvent, hash_pii, orders_stream
from kameng.contracts.hq_api import FULFIL_PATH, refund_path, sign_notification
from kameng.contracts.hq_auth import notification_key, token_digest
from kameng.contracts.money import to_fen
from kameng_storefront.shop.wallet import WALLET_LOCK_WAIT_MS
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    HoldingProxy,
    admin_csrf,
    csrf_from,
    customer_client,
    hq_add_product,
    hq_import_keys,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration

FAST_SWEEP = {"delivery_sweep_seconds": 0.3, "delivery_retry_seconds": 0.2}
BUYER = "buyer@example.com"
TOPUP = 2500  # fen: covers two orders of 9.90 and not three


def _stock(st, product: str, keys: int) -> int:
    """Product on HQ with ``keys`` keys, visible on the shop; returns its shop price (fen)."""
    hq = staff_client(st.hq_url, "admin@hq.local")
    hq_add_product(hq, product, "game", "10.00", "9.00")
    hq_import_keys(hq, product, [f"{product.upper()}-{i:03d}" for i in range(keys)])
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
    wait_for(lambda: f'data-product="{product}"' in shop.get("/").text, timeout=30)
    page = shop.get(f"/p/{product}").text
    return to_fen(re.search(r'id="price">¥([0-9.]+)<', page).group(1))


def _balance(c: httpx.Client) -> int:
    page = c.get("/account")
    assert page.status_code == 200, page.status_code
    return to_fen(re.search(r'id="balance">([0-9.]+)<', page.text).group(1))


def _topup(c: httpx.Client, amount: str) -> str:
    r = c.post("/account/topup", data={"csrf": csrf_from(c.get("/account").text),
                                       "amount": amount})
    assert r.status_code == 303, r.status_code
    return r.headers["location"]


def _pay_at_hq(pay_url: str) -> None:
    with httpx.Client(timeout=30) as payer:
        page = payer.get(pay_url)
        r = payer.post(pay_url, data={"csrf": csrf_from(page.text)})
        assert r.status_code == 303, r.status_code


def _buy_with_wallet(c: httpx.Client, product: str) -> httpx.Response:
    page = c.get(f"/p/{product}")
    assert 'id="pay-wallet"' in page.text
    return c.post("/checkout", data={"csrf": csrf_from(page.text), "product": product,
                                     "contact": "", "coupon": "", "pay_with": "wallet"})


def _rows(dsn: str, query: str, params: tuple = ()) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(query, params)
        cols = [col.name for col in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _events(st) -> list[OrderEvent]:
    r = redis.Redis.from_url(st.redis_url)
    return [OrderEvent.from_fields(f) for _, f in r.xrange(orders_stream(st.site))]


def _escrow(st) -> int:
    row = _rows(st.hq_dsn, "SELECT coalesce(sum(amount_fen) FILTER (WHERE kind = 'topup'"
                " AND status = 'paid'), 0) - coalesce(sum(amount_fen) FILTER (WHERE"
                " kind = 'wallet' AND status = 'paid'), 0) AS e FROM payments WHERE site = %s",
                (st.site,))
    return int(row[0]["e"])


def _notify(st, body: dict) -> httpx.Response:
    secret = notification_key(token_digest(st.api_token))
    raw = json.dumps(body).encode()
    ts = int(time.time())
    return httpx.post(f"{st.shop_url}/api/payments/notify", content=raw, headers={
        "x-kameng-timestamp": str(ts), "x-kameng-signature": sign_notification(secret, ts, raw)})


def test_wallet_topup_pay_refund_dispute_and_back_office(pg_admin_dsn, redis_url, tmp_path):
    with HoldingProxy() as proxy, run_stack(pg_admin_dsn, redis_url, tmp_path,
                                            shop_overrides=FAST_SWEEP,
                                            shop_hq_url=proxy.url) as st:
        proxy.target = st.hq_url
        price = _stock(st, "w1", keys=5)
        buyer = customer_client(st.shop_url, BUYER)
        assert _balance(buyer) == 0

        # Nothing in the wallet: refused with the message, no money moves, nothing paid.
        r = _buy_with_wallet(buyer, "w1")
        assert r.status_code == 402
        assert "insufficient" in r.text.lower() or "余额不足" in r.text
        assert _rows(st.shop_dsn, "SELECT * FROM wallet_movements") == []
        assert {o["status"] for o in _rows(st.shop_dsn, "SELECT status FROM orders")} == {
            "created"}

        # A bad amount is explained; a good one opens a payment at HQ and changes nothing yet.
        r = buyer.post("/account/topup", data={"csrf": csrf_from(buyer.get("/account").text),
                                               "amount": "1.001"})
        assert r.headers["location"] == "/account?problem=topup_invalid"
        assert 'id="problem"' in buyer.get(r.headers["location"]).text
        pay_url = _topup(buyer, "25")
        assert pay_url.startswith(st.hq_url)
        assert _balance(buyer) == 0
        _pay_at_hq(pay_url)
        wait_for(lambda: _balance(buyer) == TOPUP, timeout=20)

        # Replays of HQ's notification, or one for another amount, change nothing.
        topup = _rows(st.shop_dsn, "SELECT * FROM topups")[0]
        note = {"notification_id": f"{topup['payment_id']}:paid",
                "payment_id": topup["payment_id"], "site": st.site, "order_id": topup["id"],
                "amount": TOPUP, "currency": "CNY", "status": "paid"}
        assert _notify(st, note).json()["result"] == "duplicate"
        assert _notify(st, {**note, "notification_id": "other"}).json()["result"] == "unchanged"
        assert _notify(st, {**note, "notification_id": "x2", "amount": 9000}).status_code == 409
        assert _balance(buyer) == TOPUP
        moves = _rows(st.shop_dsn, "SELECT * FROM wallet_movements")
        assert [(m["kind"], m["amount_fen"]) for m in moves] == [("topup", TOPUP)]
        topups = [e for e in _events(st) if e.event == "topup"]
        assert len(topups) == 1
        assert (topups[0].amount, topups[0].order_id) == (TOPUP, topup["id"])
        assert topups[0].customer == hash_pii(BUYER)
        assert topups[0].ip == hash_pii("127.0.0.1")

        # A hostile site cannot turn top-up money into a key, nor refund it through HQ.
        api = httpx.Client(base_url=st.hq_url, timeout=30,
                           headers=st.api_headers(st.token_file.read_text()))
        r = api.post(FULFIL_PATH, json={"order_id": topup["id"], "product_id": "w1"})
        assert (r.status_code, r.json()["error"]) == (402, "payment_not_found")
        assert api.post(refund_path(topup["payment_id"])).status_code == 409

        # Pay from the balance: delivered, one movement, order.paid says wallet.
        r = _buy_with_wallet(buyer, "w1")
        assert r.status_code == 303
        oid = r.headers["location"].rsplit("/", 1)[1]
        wait_for(lambda: _rows(st.shop_dsn, "SELECT status FROM orders WHERE id = %s",
                               (oid,))[0]["status"] == "delivered", timeout=20)
        assert "W1-" in buyer.get(f"/order/{oid}").text
        assert _balance(buyer) == TOPUP - price
        paid = [e for e in _events(st) if e.order_id == oid and e.event == "order.paid"]
        assert [(e.funding, e.amount) for e in paid] == [("wallet", price)]
        hq_pay = _rows(st.hq_dsn, "SELECT kind, status FROM payments WHERE order_id = %s", (oid,))
        assert hq_pay == [{"kind": "wallet", "status": "paid"}]

        # HQ refuses this order's key: refunded before delivery, back to the wallet, once.
        proxy.fail_with = lambda path, body: 403 if path.endswith(FULFIL_PATH) else None
        r = _buy_with_wallet(buyer, "w1")
        assert r.status_code == 303
        refunded = r.headers["location"].rsplit("/", 1)[1]
        wait_for(lambda: _rows(st.shop_dsn, "SELECT status FROM orders WHERE id = %s",
                               (refunded,))[0]["status"] == "refunded", timeout=20)
        proxy.fail_with = None
        assert _balance(buyer) == TOPUP - price
        staff = staff_client(st.shop_url, st.members["site-admin"])
        again = staff.post(f"/admin/orders/{refunded}/refund", data={"csrf": admin_csrf(staff)})
        assert again.status_code == 303
        refunds = _rows(st.shop_dsn, "SELECT * FROM wallet_movements WHERE kind = 'refund'")
        assert [(m["ref"], m["amount_fen"]) for m in refunds] == [(refunded, price)]
        assert _balance(buyer) == TOPUP - price
        ev = [e.event for e in _events(st) if e.order_id == refunded]
        assert ev.count("order.refunded") == 1

        # After delivery a refund request is a dispute: no money moves.
        r = staff.post(f"/admin/orders/{oid}/refund", data={"csrf": admin_csrf(staff)})
        assert "disputed" in r.headers["location"]
        assert _balance(buyer) == TOPUP - price

        # HQ's escrow and the shop's wallets agree.
        assert _escrow(st) == TOPUP - price

        # The back office sees wallets and movements with customers:read, not without.
        page = staff.get("/admin/customers").text
        assert BUYER not in page  # masked, like the order contacts
        assert "bu***om" in page
        cid = _rows(st.shop_dsn, "SELECT id FROM customers")[0]["id"]
        detail = staff.get(f"/admin/customers/{cid}/wallet")
        assert detail.status_code == 200
        assert to_fen(re.search(r'id="balance">([0-9.]+)<', detail.text).group(1)) == (
            TOPUP - price)
        assert detail.text.count("<tr>") == 1 + 4  # header + topup, payment ×2, refund
        # One browser, two identities: a customer's login and logout leave staff logged in.
        page = staff.get("/account/signup")
        r = staff.post("/account/signup", data={"csrf": csrf_from(page.text),
                                                "email": "staff-as-buyer@example.com",
                                                "password": "a buyer's own phrase",
                                                "confirm": "a buyer's own phrase"})
        assert r.status_code == 303
        assert staff.get("/admin").status_code == 200
        assert staff.get("/account").status_code == 200
        staff.post("/account/logout", data={"csrf": csrf_from(staff.get("/account").text)})
        assert staff.get("/account").status_code == 303
        assert staff.get("/admin").status_code == 200
        finance = staff_client(st.shop_url, st.members["finance"])
        assert finance.get(f"/admin/customers/{cid}/wallet").status_code == 403

        # A tenant that writes itself a balance gets no key: HQ's escrow does not cover it,
        # and the shop's debit rolls back with the refusal.
        # (The real money left covers one more order; the next is past it.)
        assert TOPUP - price >= price > TOPUP - 2 * price
        with psycopg.connect(st.shop_dsn) as conn:
            conn.execute("UPDATE wallets SET balance_fen = 1000000")
        assert _buy_with_wallet(buyer, "w1").status_code == 303
        assert _escrow(st) == TOPUP - 2 * price
        r = _buy_with_wallet(buyer, "w1")
        assert r.status_code == 502
        assert _balance(buyer) == 1000000 - price
        assert len(_rows(st.shop_dsn, "SELECT * FROM wallet_movements")) == 5
        assert _escrow(st) == TOPUP - 2 * price

        # The database keeps the rules even against the application.
        with psycopg.connect(st.shop_dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE wallets SET balance_fen = -1")
        with psycopg.connect(st.shop_dsn) as conn, pytest.raises(psycopg.errors.RaiseException):
            conn.execute("UPDATE wallet_movements SET amount_fen = 1")


async def _concurrent_buys(st, cookies: httpx.Cookies, csrf: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=st.shop_url, cookies=cookies, timeout=60) as c:
        async def buy() -> int:
            r = await c.post("/checkout", data={"csrf": csrf, "product": "w2", "contact": "",
                                                "coupon": "", "pay_with": "wallet"})
            return r.status_code
        return list(await asyncio.gather(*(buy() for _ in range(n))))


def test_concurrent_wallet_payments_never_overdraw(pg_admin_dsn, redis_url, tmp_path):
    with run_stack(pg_admin_dsn, redis_url, tmp_path, pool_size=30) as st:
        price = _stock(st, "w2", keys=30)
        buyer = customer_client(st.shop_url, BUYER)
        afford = 3
        topup_fen = afford * price + price // 2  # three orders and a half
        _pay_at_hq(_topup(buyer, f"{topup_fen / 100:.2f}"))
        wait_for(lambda: _balance(buyer) == topup_fen, timeout=20)
        csrf = csrf_from(buyer.get("/p/w2").text)
        t0 = time.monotonic()
        statuses = asyncio.run(_concurrent_buys(st, buyer.cookies, csrf, 24))
        elapsed = time.monotonic() - t0
        print(f"24 concurrent wallet payments in {elapsed:.2f}s: {sorted(statuses)}")
        assert statuses.count(303) == afford
        assert statuses.count(402) == 24 - afford
        assert _balance(buyer) == topup_fen - afford * price
        paid = _rows(st.shop_dsn, "SELECT id FROM orders WHERE status <> 'created'")
        moves = _rows(st.shop_dsn, "SELECT * FROM wallet_movements WHERE kind = 'payment'")
        assert sorted(m["ref"] for m in moves) == sorted(o["id"] for o in paid)
        assert all(m["balance_after_fen"] >= 0 for m in moves)
        assert _escrow(st) == topup_fen - afford * price
        wallet_paid = [e for e in _events(st) if e.event == "order.paid"]
        assert [e.funding for e in wallet_paid] == ["wallet"] * afford

        # A wallet held for long (here by another connection) makes a payment wait a bounded
        # time, then refuses it, instead of holding a pooled connection indefinitely.
        with psycopg.connect(st.shop_dsn) as holder:
            holder.execute("SELECT 1 FROM wallets FOR UPDATE")
            t0 = time.monotonic()
            page = buyer.get("/p/w2")
            r = buyer.post("/checkout", timeout=WALLET_LOCK_WAIT_MS / 1000 + 10, data={
                "csrf": csrf_from(page.text), "product": "w2", "contact": "", "coupon": "",
                "pay_with": "wallet"})
            waited = time.monotonic() - t0
        assert r.status_code == 409
        assert waited < WALLET_LOCK_WAIT_MS / 1000 + 5
        assert _balance(buyer) == topup_fen - afford * price
