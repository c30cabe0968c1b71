"""Site escalation's re-arming on real Redis: the batch's counting script deletes a
site's disarm key exactly when the window's fraud rate is below ``liftAt`` (the worker's
publishing chain no longer pays a DEL round trip a batch for it). Without re-arming a
released site could never be suspended again; re-arming too early would re-raise a
person's release on the very orders that caused the hold."""

from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis

from kameng.workers.risk.escalation import Escalation, disarm_key
from kameng.workers.risk.policy import EscalationDef
from kameng.workers.risk.resp import Lane

ESC = EscalationDef(raise_at=0.2, lift_at=0.05, window_s=86400, min_orders=20)


async def test_the_counting_script_re_arms_a_site_only_below_lift_at(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    esc, lane = Escalation(client, None), Lane(client)
    tag = uuid.uuid4().hex[:8]
    a, b = f"rearm-a-{tag}", f"rearm-b-{tag}"
    now = int(time.time() * 1000)
    seq = iter(range(10_000))

    async def count(*events: tuple[str, bool, bool]) -> list[int]:
        """(site, is_order, is_fraud) per event; the window's (orders, fraud) per site."""
        items = [("default", site, f"{tag}-{next(seq)}", now, ESC, (order, fraud))
                 for site, order, fraud in events]
        call, pairs = esc.batch_command(items)
        assert call is not None
        out = (await lane.scripts([call]))[0]
        assert [p[1] for p in pairs] == list(dict.fromkeys(s for s, _, _ in events))
        return [int(x) for x in out]

    async def disarmed(site: str) -> bool:
        return bool(await client.exists(disarm_key(site)))

    try:
        await client.set(disarm_key(a), "1")
        await client.set(disarm_key(b), "1")
        # a: 1 fraud of 10 orders (10 %): between liftAt and raiseAt, stays disarmed.
        # b: 1 of 20 (exactly liftAt, 5 %): not below it, stays disarmed.
        got = await count(*[(a, True, i == 0) for i in range(10)],
                          *[(b, True, i == 0) for i in range(20)])
        assert got == [10, 1, 20, 1]
        assert await disarmed(a)
        assert await disarmed(b)
        # b: one more good order, 1 of 21 (4.8 %): re-armed; a, in the same call, is not.
        got = await count((a, True, False), (b, True, False))
        assert got == [11, 1, 21, 1]
        assert await disarmed(a)
        assert not await disarmed(b)
        # a: a charge-back with no paid order in the window reads as rate 1/11: kept;
        # then enough good orders bring it under 5 %: re-armed.
        assert await count((a, False, True)) == [11, 2]
        assert await disarmed(a)
        assert await count(*[(a, True, False) for _ in range(30)]) == [41, 2]
        assert not await disarmed(a)
        # The judge's half: below liftAt it returns at once (no round trip of its own).
        assert await esc.judge("default", a, [41, 2], ESC, None) == ""
    finally:
        async for key in client.scan_iter(match=f"kameng:risk:esc:rearm-*-{tag}*"):
            await client.delete(key)
        await client.aclose()
