"""Review on the real storefront stack: the risk worker freezes an order; it is held
until a reviewer allows it, then delivered; a reviewer's block of a paid order refunds it
through the shop's one refund path. Who and when are recorded."""

from __future__ import annotations

import uuid

import httpx
import redis.asyncio as aioredis

from kameng.workers.risk import review
from kameng.workers.risk.policy import compile_policy
from kameng.workers.risk.worker import Policies, RiskWorker
from kameng.workers.streams import ConsumerConfig

from .test_storefront_purchase import _buy, _order_status, _pay, _risk, stack, wait_for  # noqa: F401


def _worker(client, site: str) -> RiskWorker:
    pol = compile_policy(f"rv{uuid.uuid4().hex[:6]}", {"sites": [site], "rules": [
        {"name": "new-order", "expression": "event.event == 'order.created'",
         "action": "freeze", "reason": "every new order is reviewed (test)"}]})
    return RiskWorker(client, Policies(policies=[pol]), ConsumerConfig(
        group="risk", consumer="t", block_ms=20, discover_seconds=0, claim_seconds=3600,
        trim_seconds=3600))


async def _until_frozen(worker, st, oid) -> None:
    for _ in range(200):
        await worker.consumer.step()
        if _risk(st, oid) == "freeze":
            return
    raise AssertionError("the worker's freeze never reached the shop")


async def test_frozen_order_waits_for_a_reviewer_then_is_delivered(stack):  # noqa: F811
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        worker = _worker(client, stack.site)
        shop = httpx.Client(base_url=stack.shop_url)
        oid, pay_url = _buy(stack, shop, f"rv-{uuid.uuid4().hex[:6]}@example.com")
        await _until_frozen(worker, stack, oid)
        _pay(pay_url)
        wait_for(lambda: _order_status(stack, oid) == "frozen")
        assert await review.review(client, stack.site, oid, "allow", by="alice", note="ok")
        wait_for(lambda: _order_status(stack, oid) == "delivered")
        rec = await review.reviewed(client, oid)
        assert (rec["action"], rec["by"]) == ("allow", "alice")
        assert rec["at"]
        # A second verdict on the same order is refused, not published.
        assert not await review.review(client, stack.site, oid, "block", by="bob")
        assert _order_status(stack, oid) == "delivered"
    finally:
        await client.aclose()


async def test_reviewer_block_of_a_paid_order_refunds_it(stack):  # noqa: F811
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        worker = _worker(client, stack.site)
        shop = httpx.Client(base_url=stack.shop_url)
        oid, pay_url = _buy(stack, shop, f"rb-{uuid.uuid4().hex[:6]}@example.com")
        await _until_frozen(worker, stack, oid)
        _pay(pay_url)
        wait_for(lambda: _order_status(stack, oid) == "frozen")
        assert await review.review(client, stack.site, oid, "block", by="carol")
        wait_for(lambda: _order_status(stack, oid) == "refunded", 30)
    finally:
        await client.aclose()


async def test_snoozed_customer_is_not_acted_on(stack):  # noqa: F811
    from kameng.contracts.events import OrderEvent, decisions_stream

    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    try:
        site = f"sn{uuid.uuid4().hex[:6]}"
        prefix = f"ktest:{uuid.uuid4().hex[:6]}:orders:"
        pol = compile_policy("snz", {"rules": [
            {"name": "all", "expression": "event.amount > 0", "action": "block"}]})
        w = RiskWorker(client, Policies(policies=[pol]), ConsumerConfig(
            group="risk", consumer="t", prefix=prefix, block_ms=20, discover_seconds=0,
            claim_seconds=3600, trim_seconds=3600))
        await review.snooze(client, "customer", f"c-{site}", 3600, by="dave", reason="vip")
        evs = [OrderEvent.for_order("order.paid", site=site, order_id=f"{site}-{i}",
                                    customer=c, amount=100)
               for i, c in enumerate((f"c-{site}", f"other-{site}"))]
        for ev in evs:
            await client.xadd(prefix + site, ev.to_fields())
        for _ in range(50):
            await w.consumer.step()
        published = [f["order_id"] for _, f in await client.xrange(decisions_stream(site))]
        assert published == [evs[1].order_id]  # the snoozed customer's order: no decision
        import json
        rec = json.loads(await client.get(f"kameng:risk:d:{evs[0].event_id}"))
        assert rec["snoozed"] is True
        assert [h["rule"] for h in rec["hits"]] == ["all"]  # still stored
        for key in (decisions_stream(site), prefix + site,
                    f"kameng:risk:snooze:customer:c-{site}"):
            await client.delete(key)
    finally:
        await client.aclose()
