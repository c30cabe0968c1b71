"""200 concurrent checkouts (checkout + sandbox payment + delivery) for the last 50 keys
sell exactly 50, and no key twice; the fulfilment API alone also never double-allocates."""

from __future__ import annotations

import asyncio
import re

import httpx
import psycopg
import pytest

from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    hq_add_product,
    hq_import_keys,
    record_paid_payment,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration

BUYERS = 200
PAIRS_PER_WAVE = 4  # 8 requests at once: each holds at most one of HQ's 20 pool connections
LAST_KEYS = 50
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("lic")) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "psn-50", "game", "50.00", "48.00")
        hq_add_product(hq, "direct-10", "game", "10.00", "9.00")
        hq_import_keys(hq, "psn-50", [f"PSN-{i:03d}" for i in range(LAST_KEYS)])
        hq_import_keys(hq, "direct-10", [f"DIR-{i:03d}" for i in range(LAST_KEYS)])
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
        wait_for(lambda: "psn-50" in shop.get("/").text)
        yield st


async def _one_buyer(st, i: int) -> str:
    """A customer with their own cookies: product page → checkout → pay at HQ."""
    async with httpx.AsyncClient(base_url=st.shop_url, timeout=120) as shop:
        page = await shop.get("/p/psn-50")
        m = _CSRF.search(page.text)
        if not m:  # product page without a form: sold out after a sync
            return "sold-out-page"
        r = await shop.post("/checkout", data={
            "csrf": m.group(1), "product": "psn-50", "contact": f"buyer{i}@example.com"})
        if r.status_code == 409:
            return "sold-out-checkout"
        assert r.status_code == 303, r.status_code
        pay_url = r.headers["location"]
    async with httpx.AsyncClient(timeout=120) as payer:
        page = await payer.get(pay_url)
        r = await payer.post(pay_url, data={"csrf": _CSRF.search(page.text).group(1)})
        assert r.status_code == 303
    return "paid"


async def _run_buyers(st) -> list[str]:
    return await asyncio.gather(*(_one_buyer(st, i) for i in range(BUYERS)))


def test_200_concurrent_checkouts_sell_exactly_50(stack):
    outcomes = asyncio.run(_run_buyers(stack))
    paid = outcomes.count("paid")
    assert paid >= LAST_KEYS, outcomes

    def settled():
        with psycopg.connect(stack.shop_dsn) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM orders WHERE product_id = 'psn-50'"
                " AND status <> 'created' GROUP BY status").fetchall()
        counts = dict(rows)
        done = counts.get("delivered", 0) + counts.get("refunded", 0)
        return counts if done == paid else None

    counts = wait_for(settled, timeout=120, interval=0.5)
    assert counts == {"delivered": LAST_KEYS, **({"refunded": paid - LAST_KEYS}
                                                 if paid > LAST_KEYS else {})}

    with psycopg.connect(stack.hq_dsn) as conn:
        sold = conn.execute(
            "SELECT id, order_ref FROM card_keys WHERE product_id = 'psn-50' AND status = 'sold'"
        ).fetchall()
        available = conn.execute(
            "SELECT count(*) FROM card_keys WHERE product_id = 'psn-50'"
            " AND status = 'available'").fetchone()[0]
    assert len(sold) == LAST_KEYS
    assert available == 0
    assert len({order for _, order in sold}) == LAST_KEYS  # one key per order

    # Buyers see 50 distinct keys: decrypt what the shop stored.
    cipher = state_of(stack.shop_app).cipher
    with psycopg.connect(stack.shop_dsn) as conn:
        rows = conn.execute(
            "SELECT id, key_enc FROM orders WHERE status = 'delivered'"
            " AND product_id = 'psn-50'").fetchall()
    keys = [cipher.decrypt(enc, aad=oid) for oid, enc in rows]
    assert len(keys) == LAST_KEYS
    assert len(set(keys)) == LAST_KEYS
    assert all(k.startswith("PSN-") for k in keys)


async def _fulfil_storm(st) -> list[tuple[int, str | None]]:
    headers = st.api_headers(state_of(st.shop_app).license.token)
    # Enough connections that no request of a pair waits in the client's pool.
    limits = httpx.Limits(max_connections=BUYERS * 2)
    async with httpx.AsyncClient(base_url=st.hq_url, headers=headers, timeout=120,
                                 limits=limits) as c:
        async def one(i: int, together: asyncio.Barrier) -> tuple[int, str | None]:
            await together.wait()  # both requests of order i leave at the same moment
            r = await c.post("/api/v1/fulfil", json={"order_id": f"X{i}",
                                                      "product_id": "direct-10"})
            return r.status_code, r.json().get("secret")
        # Each order asked twice at once (both in flight together, released by a barrier):
        # a retry must get the same key, not a second one. In waves smaller than HQ's
        # database pool: a storm larger than the pool queues the two requests of an order
        # one behind the other, and the race this guards would never be run.
        # Results j and j+1 are order j // 2.
        results: list[tuple[int, str | None]] = []
        for start in range(0, BUYERS, PAIRS_PER_WAVE):
            wave = range(start, min(start + PAIRS_PER_WAVE, BUYERS))
            pairs = {i: asyncio.Barrier(2) for i in wave}
            results += await asyncio.gather(*(one(i, pairs[i]) for i in wave for _ in (0, 1)))
        return results


def test_fulfilment_api_never_allocates_a_key_twice(stack):
    for i in range(BUYERS):  # HQ hands out keys only against payments it recorded as paid
        record_paid_payment(stack, f"X{i}", 900)
    results = asyncio.run(_fulfil_storm(stack))
    ok = [(j // 2, s) for j, (code, s) in enumerate(results) if code == 200]
    assert {code for code, _ in results} <= {200, 409}
    by_order: dict[int, set[str]] = {}
    for order, secret in ok:
        by_order.setdefault(order, set()).add(secret)
    twice = {o: s for o, s in by_order.items() if len(s) > 1}
    assert not twice, f"orders that got two keys: {twice}"  # a retry must get the same key
    assert len(by_order) == LAST_KEYS
    all_keys = [next(iter(s)) for s in by_order.values()]
    assert len(set(all_keys)) == LAST_KEYS
