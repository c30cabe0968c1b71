"""Login and lookup throttles on the real app and Redis: counted per (account, client) and
per client from the address the trusted-proxy middleware resolves, shared by replicas,
bounded by TTLs."""

from __future__ import annotations

import secrets

import httpx
import pytest
import redis

from kameng_storefront.web.throttle import (
    LOGIN_PER_ACCOUNT_CLIENT,
    LOGIN_PER_CLIENT,
    LOOKUP_PER_CLIENT,
    FailureThrottle,
)
from tests.support.storefront import DEFAULT_PASSWORD, csrf_from, run_stack


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("thr")) as st:
        yield st


def _login(base: str, email: str, password: str, xff: str | None = None,
           source: str = "127.0.0.1") -> int:
    # Another loopback source address is another client.
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base, timeout=30, transport=transport) as c:
        token = csrf_from(c.get("/admin/login").text)
        headers = {"X-Forwarded-For": xff} if xff else {}
        return c.post("/admin/login", headers=headers,
                      data={"csrf": token, "email": email, "password": password}).status_code


def test_nobody_can_lock_a_named_admin_out(stack):
    """An attacker failing on purpose against the admin's e-mail, rotating the
    X-Forwarded-For header it writes itself, is throttled; the admin, from another
    client, still logs in. Before: the throttle counted per account alone and believed any
    X-Forwarded-For, so the admin was locked out and the attacker never was."""
    admin = stack.members["owner"]
    codes = [_login(stack.shop_url, admin, "wrong", xff=f"198.51.100.{i}")
             for i in range(LOGIN_PER_ACCOUNT_CLIENT.max_failures + 2)]
    assert codes[:LOGIN_PER_ACCOUNT_CLIENT.max_failures] == \
        [401] * LOGIN_PER_ACCOUNT_CLIENT.max_failures
    assert codes[-1] == 429  # the forged header did not make it a new client
    # The same client stays blocked even with the right password...
    assert _login(stack.shop_url, admin, DEFAULT_PASSWORD) == 429
    # ...but the admin from elsewhere is not: the counts are per (account, client).
    assert _login(stack.shop_url, admin, DEFAULT_PASSWORD, source="127.0.0.2") == 303
    # What the attacker created expires by itself: bounded, nothing kept in the process.
    r = redis.Redis.from_url(stack.redis_url)
    keys = list(r.scan_iter(f"site:{stack.site}:throttle:*"))
    assert len(keys) == 2  # one (account, client) and one client key, however many tries
    assert all(0 < r.ttl(k) <= LOGIN_PER_CLIENT.window_seconds for k in keys)


def test_lookup_is_throttled_per_client_not_by_forged_header(stack):
    with httpx.Client(base_url=stack.shop_url, timeout=30) as c:
        token = csrf_from(c.get("/lookup").text)
        codes = [c.post("/lookup", headers={"X-Forwarded-For": f"192.0.2.{i}"},
                        data={"csrf": token, "order": f"nope{i}", "contact": "x"}).status_code
                 for i in range(LOOKUP_PER_CLIENT.max_failures + 1)]
    assert codes[-1] == 429
    assert set(codes[:-1]) == {404}


async def test_counts_are_shared_by_replicas(redis_url):
    """Two replicas (two throttles, one Redis) see one count."""
    import redis.asyncio as aioredis

    site = f"thr{secrets.token_hex(3)}"
    a, b = FailureThrottle(site), FailureThrottle(site)
    r = aioredis.from_url(redis_url, decode_responses=True)
    try:
        checks = ((LOGIN_PER_ACCOUNT_CLIENT, ("x@y.example", "192.0.2.1")),)
        for i in range(LOGIN_PER_ACCOUNT_CLIENT.max_failures):
            await (a if i % 2 else b).failed(r, checks)
        assert await a.blocked(r, checks)
        assert await b.blocked(r, checks)
        assert not await b.blocked(r, ((LOGIN_PER_ACCOUNT_CLIENT, ("x@y.example", "192.0.2.2")),))
    finally:
        async for k in r.scan_iter(f"site:{site}:*"):
            await r.delete(k)
        await r.aclose()
