"""The catalogue page is served from the page cache: a hit costs no database round trip,
answers If-None-Match with 304, and the cache never outlives the data: a price change at
HQ (the catalogue sync), an announcement, or a sync done by another replica shows at once.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from kameng_storefront.state import state_of
from tests.support.storefront import (
    admin_csrf,
    hq_add_product,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration


def _price(html: str, pid: str) -> str | None:
    m = re.search(rf'data-product="{pid}".*?class="price">¥([\d.]+)<', html, re.S)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    # Two replicas of the shop on one database, as a Deployment's pods.
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("cache"),
                   shop_replicas=2) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "gift-10", "game", "10.00", "9.00")
        for url in st.shop_urls:
            wait_for(lambda u=url: "gift-10" in httpx.get(f"{u}/").text, timeout=15)
        st.hq_admin = hq
        yield st
        hq.close()


class _PoolSpy:
    """The real pool, counting the connections taken while serving HTTP requests (the
    background loops use the pool too; they are not what a page hit may cost)."""

    def __init__(self, pool) -> None:
        self._pool, self.by_requests = pool, 0

    def connection(self, *args, **kwargs):
        task = asyncio.current_task()
        if task is not None and "run_asgi" in task.get_coro().__qualname__:
            self.by_requests += 1
        return self._pool.connection(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pool, name)


def test_hit_costs_no_database_round_trip_and_revalidates_with_304(stack):
    state = state_of(stack.shop_app)
    with httpx.Client(base_url=stack.shop_url) as c:
        first = c.get("/")
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert "no-cache" in first.headers["cache-control"]
        real = state.pool
        spy = _PoolSpy(real)
        state.pool = spy
        try:
            for _ in range(20):
                r = c.get("/")
                assert r.status_code == 200
                assert r.headers["etag"] == etag
                assert r.content == first.content
            assert c.get("/", headers={"If-None-Match": etag}).status_code == 304
        finally:
            state.pool = real
        assert spy.by_requests == 0, "a cached catalogue page went to the database"
        # Cached per locale: the other language is another page with its own validator.
        en = c.get("/?lang=en")
        assert en.status_code == 200
        assert en.headers["etag"] != etag
        assert "gift-10 card" in en.text


def test_price_change_at_hq_shows_at_once_on_every_replica(stack):
    urls = stack.shop_urls
    before = {u: httpx.get(f"{u}/") for u in urls}
    assert all(_price(r.text, "gift-10") for r in before.values())
    old = _price(before[urls[0]].text, "gift-10")
    # Cost 9.00 → 19.00: HQ publishes the change, each replica's sync runs at once (the
    # first writes the shared database, the other finds the new ETag already there).
    hq_add_product(stack.hq_admin, "gift-10", "game", "20.00", "19.00")
    for u in urls:
        new = wait_for(lambda u=u: (p := _price(httpx.get(f"{u}/").text, "gift-10")) != old
                       and p, timeout=5)
        assert float(new) >= 19.0
        # ...and the validator changed with it: a browser's old copy is not confirmed.
        r = httpx.get(f"{u}/", headers={"If-None-Match": before[u].headers["etag"]})
        assert r.status_code == 200


def test_announcement_shows_at_once(stack):
    with httpx.Client(base_url=stack.shop_url) as c:
        assert "Flash sale" not in c.get("/").text  # cached now
        admin = staff_client(stack.shop_url, stack.members["owner"])
        r = admin.post("/admin/announcements", data={
            "csrf": admin_csrf(admin), "title": "Flash sale", "body": "today only"})
        assert r.status_code == 303
        assert "Flash sale" in c.get("/").text  # the same replica: no wait at all
