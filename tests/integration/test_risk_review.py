"""Review on the real storefront stack: the risk worker freezes an order; it waits in HQ's
review back office (queue with rules, reasons and feature values; filters; order page)
until a reviewer allows it, then it is delivered; a reviewer's block (here through
`kameng risk review`, the same service) refunds a paid order through the shop's one refund
path; snoozes are audited. Who, when and why are recorded once per order. Also: a real
purchase for a region outside the License is blocked by the default policy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
import redis.asyncio as aioredis
import yaml
from psycopg.rows import dict_row

from kameng.contracts.events import Decision, OrderEvent, decisions_stream, orders_stream
from kameng.workers.risk.policy import compile_policy
from kameng.workers.risk.store import RiskStore
from kameng.workers.risk.worker import Policies, RiskWorker
from kameng.workers.streams import ConsumerConfig
from tests.support.browser import browser_fixture  # noqa: F401 - the fixture
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import csrf_from

from .test_storefront_purchase import _buy, _order_status, _pay, _risk, stack, wait_for  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def _worker(client, st, policies=None, licences=None) -> RiskWorker:
    pol = compile_policy(f"rv{uuid.uuid4().hex[:6]}", {
        "sites": [st.site],
        "features": [{"name": "orders", "key": "customer", "window": "1h"}],
        "rules": [{"name": "new-order", "expression": "event.event == 'order.created'",
                   "action": "freeze", "reason": "every new order is reviewed (test)"}]}, 3)
    return RiskWorker(client, Policies(policies=policies or [pol], licences=licences or {}),
                      RiskStore(st.hq_dsn), ConsumerConfig(
                          group="risk", consumer="t", block_ms=20, discover_seconds=0,
                          claim_seconds=3600, trim_seconds=3600))


async def _until(worker, st, oid, action) -> None:
    for _ in range(200):
        await worker.consumer.step()
        if _risk(st, oid) == action:
            return
    raise AssertionError(f"the worker's {action} never reached the shop")


def _hq_rows(st, query: str, *args) -> list[dict]:
    with psycopg.connect(st.hq_dsn, row_factory=dict_row) as conn:
        return conn.execute(query, args).fetchall()


async def _order_decisions(client, st, oid) -> list[Decision]:
    return [d for d in (Decision.from_fields(f) for _, f in
                        await client.xrange(decisions_stream(st.site))) if d.order_id == oid]


async def test_frozen_order_is_reviewed_in_hq_back_office_then_delivered(stack):  # noqa: F811
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        worker = _worker(client, stack)
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
        oid, pay_url = _buy(stack, shop, f"rv-{uuid.uuid4().hex[:6]}@example.com")
        await _until(worker, stack, oid, "freeze")
        _pay(pay_url)
        wait_for(lambda: _order_status(stack, oid) == "frozen")
        hq = stack.hq
        # The queue: the order with its site, amount, rule, reason and feature values.
        page = hq.get("/admin/review", params={"site": stack.site})
        assert page.status_code == 200
        row = re.search(rf'<tr class="held" data-order="{oid}">.*?</tr>', page.text, re.S)
        assert row, "the frozen order is not in the queue"
        for text in (stack.site, "new-order", "every new order is reviewed (test)",
                     "orders=1"):
            assert text in row.group(0), text
        # Filters: by action and age leave it out; by its own action keep it.
        assert oid not in hq.get("/admin/review", params={"action": "review"}).text
        assert oid in hq.get("/admin/review", params={"action": "freeze"}).text
        assert oid not in hq.get("/admin/review", params={"older": "24h"}).text
        assert oid in hq.get("/admin/review", params={"age": "1h"}).text
        # The order page; a verdict needs a reason.
        url = f"/admin/review/{stack.site}/{oid}"
        order = hq.get(url)
        assert order.status_code == 200
        assert "new-order" in order.text
        assert "(v3, enforce)" \
            in order.text
        token = csrf_from(order.text)
        assert hq.post(url, data={"csrf": token, "action": "allow", "note": " "}
                       ).status_code == 400
        r = hq.post(url, data={"csrf": token, "action": "allow", "note": "known buyer"})
        assert r.status_code == 303
        assert r.headers["location"].endswith("msg=reviewed")
        wait_for(lambda: _order_status(stack, oid) == "delivered")
        (rec,) = _hq_rows(stack, "SELECT * FROM risk.reviews WHERE order_id = %s", oid)
        assert (rec["action"], rec["reviewer"], rec["note"]) == ("allow", "admin@hq.local",
                                                                 "known buyer")
        assert rec["reviewed_at"] is not None
        # A second verdict (a double click, another reviewer) changes nothing.
        r = hq.post(url, data={"csrf": token, "action": "block", "note": "changed my mind"})
        assert r.headers["location"].endswith("msg=already_reviewed")
        reviews = [d for d in await _order_decisions(client, stack, oid)
                   if d.rule.startswith("review:")]
        assert [(d.action, d.rule) for d in reviews] == [("allow", "review:admin@hq.local")]
        assert _order_status(stack, oid) == "delivered"
        assert oid not in hq.get("/admin/review").text
        assert "known buyer" in hq.get(url).text
        # Only a logged-in reviewer sees any of it.
        assert _anonymous(stack, url) == (303, 303)  # to the login page
    finally:
        await client.aclose()


def _anonymous(st, url: str) -> tuple[int, int]:
    anon = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.hq_url)
    return (anon.get("/admin/review").status_code,
            anon.post(url, data={"action": "block", "note": "x"}).status_code)


def _cli(st, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAMENG_REDIS_URL": st.redis_url, "KAMENG_HQ_DATABASE_URL": st.hq_dsn}
    return subprocess.run([sys.executable, "-m", "kameng.cli.main", "risk", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_cli_block_of_a_paid_order_refunds_it(stack):  # noqa: F811
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        worker = _worker(client, stack)
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
        oid, pay_url = _buy(stack, shop, f"rb-{uuid.uuid4().hex[:6]}@example.com")
        await _until(worker, stack, oid, "freeze")
        _pay(pay_url)
        wait_for(lambda: _order_status(stack, oid) == "frozen")
        cmd = ["review", stack.site, oid, "block", "--by", "carol", "--note",
               "stolen card reported"]
        out = _cli(stack, *cmd)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: _order_status(stack, oid) == "refunded", 30)
        again = _cli(stack, *cmd)
        assert again.returncode == 1
        assert "already reviewed: block by carol" in again.stderr
        (rec,) = _hq_rows(stack, "SELECT * FROM risk.reviews WHERE order_id = %s", oid)
        assert (rec["reviewer"], rec["note"]) == ("carol", "stolen card reported")
        # An order no rule held cannot be "reviewed" into a refund.
        stray = _cli(stack, "review", stack.site, "not-held", "block", "--by", "carol",
                     "--note", "x")
        assert stray.returncode == 2
        assert "not under review or frozen" in stray.stderr
    finally:
        await client.aclose()


async def test_snooze_from_the_order_page_is_audited_and_stops_acting(stack):  # noqa: F811
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        worker = _worker(client, stack)
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
        contact = f"sz-{uuid.uuid4().hex[:6]}@example.com"
        oid, _ = _buy(stack, shop, contact)
        await _until(worker, stack, oid, "freeze")
        (dec,) = _hq_rows(stack, "SELECT customer FROM risk.decisions WHERE order_id = %s",
                          oid)
        url = f"/admin/review/{stack.site}/{oid}"
        token = csrf_from(stack.hq.get(url).text)
        assert stack.hq.post(f"{url}/snooze", data={
            "csrf": token, "entity": "customer", "for": "7d", "reason": ""}).status_code == 400
        r = stack.hq.post(f"{url}/snooze", data={
            "csrf": token, "entity": "customer", "for": "7d", "reason": "VIP, verified"})
        assert r.status_code == 303
        assert r.headers["location"].endswith("msg=snoozed")
        key = f"kameng:risk:snooze:customer:{dec['customer']}"
        assert 7 * 86400 - 60 < await client.ttl(key) <= 7 * 86400
        (audit,) = _hq_rows(stack, "SELECT * FROM risk.snoozes WHERE value = %s",
                            dec["customer"])
        assert (audit["entity"], audit["set_by"], audit["reason"]) == (
            "customer", "admin@hq.local", "VIP, verified")
        assert "VIP, verified" in stack.hq.get(url).text
        # The same customer's next order: its hit is stored, nothing is acted on.
        oid2, _ = _buy(stack, shop, contact)
        for _ in range(100):
            await worker.consumer.step()
            if _hq_rows(stack, "SELECT 1 FROM risk.decisions WHERE order_id = %s", oid2):
                break
        (d2,) = _hq_rows(stack, "SELECT action, snoozed FROM risk.decisions"
                         " WHERE order_id = %s", oid2)
        assert (d2["action"], d2["snoozed"]) == ("allow", True)
        assert _hq_rows(stack, "SELECT h->>'rule' AS rule FROM risk.decisions,"
                        " jsonb_array_elements(hits) h WHERE event_id = %s",
                        f"{oid2}:order.created") == [{"rule": "new-order"}]
        assert await _order_decisions(client, stack, oid2) == []
        assert _risk(stack, oid2) is None
        await client.delete(key)
    finally:
        await client.aclose()


def _checkout(stack, shop: httpx.Client, region: str) -> httpx.Response:  # noqa: F811
    token = csrf_from(shop.get("/p/steam-100").text)
    return shop.post("/checkout", data={"csrf": token, "product": "steam-100",
                                        "contact": f"rg-{uuid.uuid4().hex[:6]}@example.com",
                                        "region": region})


async def test_purchase_for_a_region_outside_the_license_is_blocked_by_default_policy(
        stack):  # noqa: F811
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        default = yaml.safe_load((ROOT / "manifests/samples/riskpolicy-default.yaml")
                                 .read_text())
        pol = compile_policy(f"default{uuid.uuid4().hex[:4]}",
                             {**default["spec"], "sites": [stack.site]})
        # The site's License as the worker reads it (the stack's: game, mobile; CN-31).
        lic = {stack.site: {"categories": ["game", "mobile"], "regions": ["CN-31"]}}
        worker = _worker(client, stack, [pol], lic)
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
        # A region that is not an ISO 3166-2 code is refused at checkout.
        assert _checkout(stack, shop, "Narnia").status_code == 400
        outside, inside = _checkout(stack, shop, "us-ny"), _checkout(stack, shop, "CN-31")
        oids = []
        for r in (outside, inside):
            assert r.status_code == 303, r.text[:300]
            with psycopg.connect(stack.shop_dsn) as conn:
                oids.append(conn.execute("SELECT id FROM orders WHERE pay_url = %s",
                                         (r.headers["location"],)).fetchone()[0])
        out_oid, in_oid = oids
        # The buyer's region travels on the order events (normalised).
        regions = {OrderEvent.from_fields(f).order_id: OrderEvent.from_fields(f).region
                   for _, f in await client.xrange(orders_stream(stack.site))}
        assert (regions[out_oid], regions[in_oid]) == ("US-NY", "CN-31")
        await _until(worker, stack, out_oid, "block")
        (d,) = _hq_rows(stack, "SELECT action, rule, region FROM risk.decisions"
                        " WHERE event_id = %s", f"{out_oid}:order.created")
        assert (d["action"], d["rule"], d["region"]) == (
            "block", f"{pol.name}/region-outside-license", "US-NY")
        # Paid anyway: the money goes straight back, no key is delivered.
        _pay(outside.headers["location"])
        wait_for(lambda: _order_status(stack, out_oid) == "refunded", 30)
        # The licensed region's order is decided allow and delivered.
        for _ in range(50):
            await worker.consumer.step()
            if _hq_rows(stack, "SELECT 1 FROM risk.decisions WHERE event_id = %s",
                        f"{in_oid}:order.created"):
                break
        assert _risk(stack, in_oid) is None
        _pay(inside.headers["location"])
        wait_for(lambda: _order_status(stack, in_oid) == "delivered")
    finally:
        await client.aclose()


async def test_review_pages_in_headless_chromium(stack, browser):  # noqa: F811
    """Looks at the queue and the order page in a real browser (screenshots in
    artifacts/screenshots/) and allows an order by clicking."""
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        worker = _worker(client, stack)
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
        oid, pay_url = _buy(stack, shop, f"br-{uuid.uuid4().hex[:6]}@example.com")
        await _until(worker, stack, oid, "freeze")
        _pay(pay_url)
        wait_for(lambda: _order_status(stack, oid) == "frozen")
        _browse_and_allow(browser, stack, oid)
        wait_for(lambda: _order_status(stack, oid) == "delivered")
    finally:
        await client.aclose()


def _browse_and_allow(wd, st, oid: str) -> None:
    shots = []
    wd.login(st.hq_url, "admin@hq.local", st.password)
    wd.get(f"{st.hq_url}/admin/review?lang=zh-CN")
    assert wd.exists(f'tr.held[data-order="{oid}"]')
    shots.append(wd.screenshot("20-hq-risk-queue-zh"))
    wd.get(f"{st.hq_url}/admin/review?lang=en&action=freeze&age=24h")
    assert "every new order is reviewed (test)" in wd.text("#queue")
    shots.append(wd.screenshot("21-hq-risk-queue-en"))
    wd.click(f'tr.held[data-order="{oid}"] a')
    wait_for(lambda: oid in wd.url, timeout=15, interval=0.2)
    shots.append(wd.screenshot("22-hq-risk-order"))
    wd.type("#allow-form textarea[name=note]", "verified by phone")
    wd.click("#allow-form button")
    wait_for(lambda: wd.url.endswith("msg=reviewed"), timeout=15, interval=0.2)
    assert "verified by phone" in wd.text("#review-record")
    shots.append(wd.screenshot("23-hq-risk-reviewed"))
    for path in shots:
        assert path.stat().st_size > 5_000, path
