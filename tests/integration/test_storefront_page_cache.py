"""The catalogue page is served from the page cache: a hit costs no database round trip,
answers If-None-Match with 304, and the cache never outlives the data: a price change at
HQ (the catalogue sync), an announcement, or a sync done by another replica shows at once.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import httpx
import pytest

from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
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
    with httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url) as c:
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
    with httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url) as c:
        assert "Flash sale" not in c.get("/").text  # cached now
        admin = staff_client(stack.shop_url, stack.members["owner"])
        r = admin.post("/admin/announcements", data={
            "csrf": admin_csrf(admin), "title": "Flash sale", "body": "today only"})
        assert r.status_code == 303
        assert "Flash sale" in c.get("/").text  # the same replica: no wait at all


def _fast_hits(app) -> float:
    return state_of(app).metrics.registry.get_sample_value(
        "kameng_storefront_page_fast_hits_total") or 0.0


_PER_RESPONSE = {"date", "server"}  # uvicorn's own, different on every response


def _headers(r: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in r.headers.multi_items() if k not in _PER_RESPONSE]


def _fast_hit(app, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET ``url`` until the fast path answers it: the catalogue sync (every second here)
    may drop the page in between, and then a GET goes the full way and fills it again."""
    for _ in range(5):
        before = _fast_hits(app)
        r = httpx.get(url, headers=headers)  # a fresh client: no cookies kept
        if _fast_hits(app) == before + 1:
            return r
    raise AssertionError("a cache hit without a session took the full path")


def test_a_hit_without_a_session_skips_the_stack_and_sends_what_the_full_path_sends(stack):
    """A visitor without a session cookie gets a hit from the fast path (shop.fast_path);
    one with the cookie (here one the app cannot decode: an empty session, the same page)
    from the route behind the whole middleware stack. Same status, headers, body."""
    app, url = stack.shop_app, f"{stack.shop_url}/"
    cookie = {"Cookie": "kameng_subsite=not-a-session"}
    fast = _fast_hit(app, url)
    before = _fast_hits(app)
    slow = httpx.get(url, headers=cookie)
    assert _fast_hits(app) == before, "a request with a session cookie took the fast path"
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert _headers(fast) == _headers(slow)
    headers = dict(_headers(fast))
    assert headers["content-language"] == "zh-CN"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["vary"] == "Cookie"
    assert headers["cache-control"] == "no-cache"
    # Revalidation: the same 304 both ways.
    etag = {"If-None-Match": fast.headers["etag"]}
    fast304 = _fast_hit(app, url, etag)
    slow304 = httpx.get(url, headers={**etag, **cookie})
    assert fast304.status_code == slow304.status_code == 304
    assert fast304.content == slow304.content == b""
    assert _headers(fast304) == _headers(slow304)
    # Anything else goes the full way: a query, another method, a body.
    before = _fast_hits(app)
    for r in (httpx.get(f"{url}?lang=en"), httpx.head(url),
              httpx.request("GET", url, content=b"x")):
        assert r.status_code == 200
    assert _fast_hits(app) == before


def test_page_views_are_counted_in_batches_and_none_is_lost_when_redis_fails(stack,
                                                                               redis_url):
    """A view costs no Redis round trip (counted in memory, flushed every second); a
    flush that fails keeps its counts for the next one."""
    import redis.asyncio as aioredis

    from kameng_storefront.shop.kpis import VISIT_TTL_SECONDS, visits_key
    from kameng_storefront.web.visit_tally import VisitTally

    async def scenario() -> None:
        tally, key_of = VisitTally(), (lambda day: visits_key("tally-test", day))
        for _ in range(5):
            tally.add("game")
        tally.add("")
        dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        with pytest.raises(Exception):  # noqa: B017,PT011 - whatever the client raises
            await tally.flush(dead, key_of, VISIT_TTL_SECONDS)
        await dead.aclose()
        assert tally.pending() == 6
        live = aioredis.from_url(redis_url, decode_responses=True)
        try:
            await tally.flush(live, key_of, VISIT_TTL_SECONDS)
            assert tally.pending() == 0
            key = key_of(datetime.now(UTC).date())
            assert await live.hgetall(key) == {"game": "5", "": "1"}
            assert 0 < await live.ttl(key) <= VISIT_TTL_SECONDS
            await live.delete(key)
        finally:
            await live.aclose()

    asyncio.run(scenario())
