"""Stream discovery off the risk worker's hot loop (``background_discovery``): a SCAN of a
keyspace of millions of counters and markers takes many round trips, and in line it held
every event behind it every ``discover_seconds``."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from kameng.workers.streams import ConsumerConfig, StreamConsumer


@pytest.fixture
async def client(redis_url):
    c = aioredis.from_url(redis_url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    yield c, tag
    async for key in c.scan_iter(match=f"ktest:{tag}:*"):
        await c.delete(key)
    await c.aclose()


@pytest.mark.parametrize("background", [True, False])
async def test_a_slow_discovery_does_not_hold_the_events_back(client, background):
    c, tag = client
    prefix = f"ktest:{tag}:orders:"
    got: list[str] = []

    async def handler(entries):
        got.extend(e.id for e in entries)

    cfg = ConsumerConfig(group="risk", consumer="t", prefix=prefix, block_ms=10,
                         discover_seconds=0, claim_seconds=3600, trim_seconds=3600,
                         background_discovery=background)
    consumer = StreamConsumer(c, cfg, handler)
    await c.xadd(prefix + "a", {"n": "0"})
    await consumer.step()  # the first discovery runs in line: nothing to read before it
    assert len(got) == 1

    real = consumer.discover
    slow = asyncio.Event()

    async def slow_discover() -> set[str]:
        await asyncio.sleep(0.5)  # a SCAN over a large keyspace
        found = await real()
        slow.set()
        return found

    consumer.discover = slow_discover  # type: ignore[method-assign]
    ids = [await c.xadd(prefix + "a", {"n": str(i)}) for i in range(1, 4)]
    t0 = time.perf_counter()
    await consumer.step()
    took = time.perf_counter() - t0
    assert got[1:] == ids
    if background:
        assert took < 0.25, f"a step waited {took:.2f}s for discovery"
        # ... which still completes, and finds a stream created meanwhile.
        await c.xadd(prefix + "b", {"n": "b"})
        await asyncio.wait_for(slow.wait(), 5)
        consumer.discover = real  # type: ignore[method-assign]
        for _ in range(50):
            await consumer.step()
            if prefix + "b" in consumer.streams and len(got) == 5:
                break
        assert prefix + "b" in consumer.streams
        assert len(got) == 5
    else:
        assert took >= 0.5  # in line: every event waits for the scan (the old way)
    await consumer._stop_discovery()
