"""Withdrawals and refunds above the RolePolicy's approvalLimits wait for HQ (issue 12,
gap 1), on the dev environment's PostgreSQL and Redis with a real HQ and shop:

- above the limit, a withdrawal is held (its amount reserved: the balance cannot be spent
  twice meanwhile), shows up in HQ's approvals queue, and is paid (its event leaves the
  shop) exactly once when HQ approves, however often the shop polls;
- a rejected one releases the reservation and never leaves the shop;
- below the limit nothing changes: the withdrawal is made at once;
- above its limit a refund is not made while HQ decides, and a rejected one never is.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from kameng.contracts.events import orders_stream
from tests.support.browser import browser_fixture  # noqa: F401 (the browser fixture)
from tests.support.storefront import csrf_from, run_stack, staff_client

pytestmark = pytest.mark.integration

LIMITS = {"withdrawalFen": 50_000, "refundFen": 2_000}  # 500.00 and 20.00 yuan


def _stack(pg_admin_dsn: str, redis_url: str, tmp: Path) -> Any:
    return run_stack(pg_admin_dsn, redis_url, tmp,
                     config_overrides={"approvals": ["finance:withdraw", "orders:refund"],
                                       "approval_limits": LIMITS},
                     shop_overrides={"approvals_poll_seconds": 0.3,
                                     "min_withdrawal_fen": 100})


def _seed_margin(dsn: str, fen: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (id, product_id, category, unit_cost_fen, price_fen,"
                     " amount_fen, contact_enc, contact_hash, status)"
                     " VALUES ('M1', 'g1', 'game', 0, %s, %s, 'x', 'h', 'delivered')",
                     (fen, fen))


def _withdraw(shop: httpx.Client, yuan: str) -> str:
    page = shop.get("/admin/finance")
    r = shop.post("/admin/withdrawals", data={"csrf": csrf_from(page.text), "amount": yuan})
    assert r.status_code == 303, r.text[:500]
    return str(r.headers["location"])


def _withdrawals(dsn: str) -> list[tuple[int, int, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, amount_fen, status FROM withdrawals ORDER BY id"
                            ).fetchall()


def _balance(shop: httpx.Client) -> str:
    page = shop.get("/admin/finance").text
    return page.split('id="balance">')[1].split("<")[0]


def _events(redis_url: str, site: str, wid: int) -> int:
    """How many withdrawal.requested events for W<wid> left the shop."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    n = 0
    for _, fields in r.xrange(orders_stream(site)):
        text = json.dumps(fields)
        if "withdrawal.requested" in text and f"W{wid}" in text:
            n += 1
    return n


def _hq_request(hq: httpx.Client, reference: str) -> str:
    """HQ's request id for the held action ``reference`` (from its approvals queue)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = hq.get("/admin/approvals").text
        for rid in set(re.findall(r"/admin/approvals\?id=(R[0-9a-f]+)", page)):
            detail = hq.get(f"/admin/approvals?id={rid}").text
            if reference in detail:
                return rid
        time.sleep(0.3)
    raise AssertionError(f"HQ never listed the request for {reference}")


def _decide(hq: httpx.Client, rid: str, decision: str, reason: str = "") -> None:
    page = hq.get(f"/admin/approvals?id={rid}").text
    r = hq.post(f"/admin/approvals/{rid}/{decision}",
                data={"csrf": csrf_from(page), "reason": reason})
    assert r.status_code == 303, r.text[:500]


def _wait(pred: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(what)


def test_withdrawal_above_limit_waits_then_pays_once_rejected_releases_below_is_immediate(
        pg_admin_dsn: str, redis_url: str, tmp_path: Path, browser: Any) -> None:
    with _stack(pg_admin_dsn, redis_url, tmp_path) as st:
        _seed_margin(st.shop_dsn, 200_000)  # 2000.00 yuan to withdraw
        shop = staff_client(st.shop_url, st.members["finance"])
        hq = staff_client(st.hq_url, "admin@hq.local")

        # Above the limit (500.00): held, reserved, nothing leaves the shop.
        assert "awaiting" in _withdraw(shop, "1500.00")
        [(w1, amount, status)] = _withdrawals(st.shop_dsn)
        assert (amount, status) == (150_000, "awaiting_approval")
        assert _balance(shop) == "500.00"  # reserved
        # The reservation holds: the same money cannot be withdrawn again meanwhile.
        assert "exceeds" in _withdraw(shop, "600.00")
        rid = _hq_request(hq, f"W{w1}")
        # What people see: HQ's request (amount, reference, who) and the shop's held row.
        browser.login(st.hq_url, "admin@hq.local", st.password)
        browser.get(f"{st.hq_url}/admin/approvals?id={rid}&lang=en")
        browser.screenshot("money-01-hq-withdrawal-request")
        browser.login(st.shop_url, st.members["finance"], st.password)
        browser.get(f"{st.shop_url}/admin/finance?lang=en")
        browser.screenshot("money-02-shop-withdrawal-held")
        time.sleep(1)  # several polls while pending: still held, still no event
        assert _withdrawals(st.shop_dsn)[0][2] == "awaiting_approval"
        assert _events(redis_url, st.site, w1) == 0

        # HQ approves: the shop pays it, exactly once, however many polls follow.
        _decide(hq, rid, "approve")
        _wait(lambda: _withdrawals(st.shop_dsn)[0][2] == "requested",
              "the approved withdrawal was never made")
        time.sleep(1.2)  # more polls
        assert _events(redis_url, st.site, w1) == 1
        assert _balance(shop) == "500.00"

        # Below the limit: at once, no request to HQ.
        assert "withdrawal+requested" in _withdraw(shop, "100.00")
        w2 = _withdrawals(st.shop_dsn)[-1]
        assert w2[1:] == (10_000, "requested")
        _wait(lambda: _events(redis_url, st.site, w2[0]) == 1, "no event for W2")
        assert _balance(shop) == "400.00"

        # Another one above the limit after more sales, rejected: the reservation is released.
        with psycopg.connect(st.shop_dsn, autocommit=True) as conn:
            conn.execute("UPDATE orders SET amount_fen = amount_fen + 100000,"
                         " price_fen = price_fen + 100000 WHERE id = 'M1'")
        assert "awaiting" in _withdraw(shop, "800.00")
        w3 = _withdrawals(st.shop_dsn)[-1][0]
        assert _balance(shop) == "600.00"
        _decide(hq, _hq_request(hq, f"W{w3}"), "reject", "documents missing")
        _wait(lambda: _withdrawals(st.shop_dsn)[-1][2] == "rejected",
              "the rejected withdrawal was never released")
        assert _balance(shop) == "1400.00"
        time.sleep(1)
        assert _events(redis_url, st.site, w3) == 0
        # HQ keeps who asked, what and the decision.
        detail = hq.get(f"/admin/approvals?id={rid}").text
        assert st.members["finance"] in detail
        assert f"W{w1}" in detail


def test_refund_above_limit_is_not_made_until_hq_decides(
        pg_admin_dsn: str, redis_url: str, tmp_path: Path) -> None:
    with _stack(pg_admin_dsn, redis_url, tmp_path) as st:
        with psycopg.connect(st.shop_dsn, autocommit=True) as conn:
            for oid, fen in (("BIG1", 5_000), ("BIG2", 6_000)):
                conn.execute("INSERT INTO orders (id, product_id, category, unit_cost_fen,"
                             " price_fen, amount_fen, contact_enc, contact_hash, status)"
                             " VALUES (%s, 'g1', 'game', 0, %s, %s, 'x', 'h', 'delivered')",
                             (oid, fen, fen))
        shop = staff_client(st.shop_url, st.members["site-admin"])
        hq = staff_client(st.hq_url, "admin@hq.local")

        def ask(oid: str) -> str:
            page = shop.get("/admin/orders").text
            r = shop.post(f"/admin/orders/{oid}/refund", data={"csrf": csrf_from(page)})
            assert r.status_code == 303, r.text[:500]
            return str(r.headers["location"])

        def status(oid: str) -> str:
            with psycopg.connect(st.shop_dsn) as conn:
                return conn.execute("SELECT status FROM orders WHERE id = %s", (oid,)
                                    ).fetchone()[0]  # type: ignore[index]

        def hold(oid: str) -> tuple[str, str]:
            with psycopg.connect(st.shop_dsn) as conn:
                return conn.execute("SELECT status, result FROM refund_holds WHERE"
                                    " order_id = %s", (oid,)).fetchone()  # type: ignore

        assert "awaiting" in ask("BIG1")
        assert "awaiting" in ask("BIG1")  # a second click is the same hold
        assert "awaiting" in ask("BIG2")
        time.sleep(1)
        assert (status("BIG1"), status("BIG2")) == ("delivered", "delivered")
        r1, r2 = _hq_request(hq, "BIG1"), _hq_request(hq, "BIG2")
        assert r1 != r2
        _decide(hq, r2, "reject", "no reason to refund")
        _wait(lambda: hold("BIG2")[0] == "rejected", "the rejected refund hold stayed")
        assert status("BIG2") == "delivered"  # never refunded
        _decide(hq, r1, "approve")
        # Approved: the order's refund rule runs once (a delivered order becomes a dispute
        # for HQ to decide; no money moves without it).
        _wait(lambda: hold("BIG1")[0] == "executed", "the approved refund was never made")
        assert hold("BIG1")[1] != ""


async def test_an_approval_seen_by_several_pollers_at_once_pays_once(
        pg_admin_dsn: str, redis_url: str) -> None:
    """Two replicas (or the route's own sync and the loop) may act on the same approval at
    the same moment: exactly one of them makes the withdrawal."""
    import asyncio
    import secrets

    import redis.asyncio as aioredis

    from kameng.contracts.siteconfig import SiteConfig
    from kameng_storefront.config import Settings
    from kameng_storefront.crypto import DataCipher
    from kameng_storefront.db import open_pool
    from kameng_storefront.shop.balance import release_held_withdrawal, request_withdrawal
    from kameng_storefront.state import AppState
    from tests.support.storefront import temp_database

    site = f"race{secrets.token_hex(3)}"
    with temp_database(pg_admin_dsn, site) as dsn:
        cfg = SiteConfig.model_validate({"site": site, "approvals": ["finance:withdraw"],
                                         "approvalLimits": {"withdrawalFen": 100}})
        settings = Settings(mode="subsite", site=cfg, database_url=dsn, redis_url=redis_url,
                            session_secret="s", data_keys=DataCipher.generate_spec("k"),
                            public_url="http://t", min_withdrawal_fen=100)
        state = AppState(settings=settings, cipher=DataCipher(settings.data_keys))
        state.pool = await open_pool(dsn, "subsite", min_size=2, max_size=8)
        state.redis = aioredis.from_url(redis_url, decode_responses=True)
        try:
            _seed_margin(dsn, 10_000)
            w = await request_withdrawal(state, 5_000, "fin@x")
            assert w.awaiting_approval
            assert w.id is not None
            made = await asyncio.gather(*(release_held_withdrawal(state, w.id, True, "R1")
                                          for _ in range(6)))
            assert made.count(True) == 1
            assert _events(redis_url, site, w.id) == 1
            # A late rejection (HQ cannot, but a stale answer might arrive) changes nothing.
            assert not await release_held_withdrawal(state, w.id, False, "R1")
            assert _withdrawals(dsn) == [(w.id, 5_000, "requested")]
        finally:
            await state.redis.delete(orders_stream(site))
            await state.redis.aclose()
            await state.pool.close()
