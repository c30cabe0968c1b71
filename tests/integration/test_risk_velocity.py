"""Velocity counters on real Redis (the counting is a Lua script, so these run on the dev
environment's server): window boundaries at bucket granularity, sums, idempotent
redelivery, late events, expiry, and the batch script agreeing with the per-event one."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from kameng.workers.risk.policy import compile_policy
from kameng.workers.risk.velocity import BUCKETS, Velocity, bucket_ms

WINDOW_MS = 600_000  # 10m: 60 buckets of 10 s
G = WINDOW_MS // BUCKETS
T0 = 1_800_000_000_000  # a bucket boundary (divisible by 10 s)


@pytest.fixture
async def v(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    yield client, Velocity(client, prefix=f"ktest:{tag}:v:"), tag
    async for key in client.scan_iter(match=f"ktest:{tag}:*"):
        await client.delete(key)
    await client.aclose()


def _policy(tag: str):
    return compile_policy(f"p{tag}", {"features": [
        {"name": "n", "key": "customer", "window": "10m", "events": ["order.paid"]},
        {"name": "amt", "key": "customer", "aggregate": "sum", "window": "10m",
         "events": ["order.paid"]},
        {"name": "ip", "key": "ip", "window": "10m"}],
        "rules": [{"name": "never", "expression": "false", "action": "review"}]})


def _ev(i: int | str, ts: int, amount: int = 100, event: str = "order.paid",
        customer: str = "c", ip: str = "") -> dict:
    return {"eventId": f"e{i}", "event": event, "ts": ts, "amount": amount,
            "customer": customer, "ip": ip}


def test_granularity():
    assert bucket_ms(600) == G == 10_000
    assert bucket_ms(3600) == 60_000
    assert bucket_ms(1) == 16  # a 1 s window still has buckets of whole milliseconds


async def test_counts_and_sums_over_the_window_with_bucket_boundaries(v):
    _, vel, tag = v
    p = _policy(tag)
    assert await vel.features(p, _ev(1, T0, 100)) == {"n": 1, "amt": 100, "ip": 0}
    assert await vel.features(p, _ev(2, T0 + 5_000, 250)) == {"n": 2, "amt": 350, "ip": 0}
    # Last bucket of the window that still holds e1/e2: [T0, T0 + G) is in the window
    # until the window's newest bucket is 59 buckets later.
    late = T0 + (BUCKETS - 1) * G + G - 1
    assert await vel.features(p, _ev(3, late, 1)) == {"n": 3, "amt": 351, "ip": 0}
    # One bucket on, e1 and e2 have left the window (exactly WINDOW_MS after T0).
    assert await vel.features(p, _ev(4, T0 + WINDOW_MS, 1)) == {"n": 2, "amt": 2, "ip": 0}


async def test_an_event_of_another_type_reads_without_recording(v):
    _, vel, tag = v
    p = _policy(tag)
    await vel.features(p, _ev(1, T0, 100))
    got = await vel.features(p, _ev(2, T0 + 1, 999, event="order.created", ip="i"))
    assert got == {"n": 1, "amt": 100, "ip": 1}  # ip counts every event type
    assert await vel.features(p, _ev(3, T0 + 2, 1)) == {"n": 2, "amt": 101, "ip": 0}


async def test_a_redelivered_event_is_counted_once(v):
    _, vel, tag = v
    p = _policy(tag)
    assert await vel.features(p, _ev(1, T0, 100, ip="i")) == {"n": 1, "amt": 100, "ip": 1}
    assert await vel.features(p, _ev(1, T0, 100, ip="i")) == {"n": 1, "amt": 100, "ip": 1}
    # ... also through the batch script, also in the same batch
    item = ([(p, vel.prepare(p, _ev(1, T0, 100, ip="i")))], [])
    res = await vel.batch([item, item])
    assert [f[p.name] for _, f in res] == [{"n": 1, "amt": 100, "ip": 1}] * 2


async def test_late_events_read_the_window_ending_at_their_own_time(v):
    _, vel, tag = v
    p = _policy(tag)
    await vel.features(p, _ev(1, T0, 1))
    await vel.features(p, _ev(2, T0 + WINDOW_MS + G, 10))  # e1 has left this window
    # A late event between them sees e1 (its own window), counts into the newest window
    # only while its bucket is inside it.
    assert await vel.features(p, _ev(3, T0 + 3 * G, 100)) == {"n": 2, "amt": 101, "ip": 0}
    assert await vel.features(p, _ev(4, T0 + WINDOW_MS + G, 1000)) \
        == {"n": 3, "amt": 1110, "ip": 0}
    # Older than two windows behind the newest: too late to count anywhere.
    assert await vel.features(p, _ev(5, T0 - WINDOW_MS, 5)) == {"n": 0, "amt": 0, "ip": 0}


async def test_a_jump_past_two_windows_starts_afresh_and_memory_stays_bounded(v):
    client, vel, tag = v
    p = _policy(tag)
    for i in range(300):  # 300 events over 3 windows, one every 6 s
        await vel.features(p, _ev(i, T0 + i * 6_000, 1))
    key = vel.key(p.name, "customer", "c")  # features n and amt share the hash

    async def fields(name: str) -> int:
        return sum(1 for f in await client.hkeys(key) if f.startswith(f"{name}#"))

    assert await fields("n") <= 2 * BUCKETS + 2
    assert await fields("amt") <= 2 * BUCKETS + 2
    assert await vel.features(p, _ev("x", T0 + 10 * WINDOW_MS, 7)) \
        == {"n": 1, "amt": 7, "ip": 0}
    assert await fields("n") == 3  # the one bucket, hi and t
    assert await client.hlen(key) == 6  # and the same for amt: nothing else is left


async def test_counters_and_markers_expire(v, ):
    client, vel, tag = v
    p = _policy(tag)
    import time

    now = int(time.time() * 1000)
    await vel.features(p, _ev(1, now, 1))
    ttl = await client.pttl(vel.key(p.name, "customer", "c"))
    assert WINDOW_MS < ttl <= 2 * WINDOW_MS + G
    assert 0 < await client.pttl(vel.marker("e1")) <= 2 * WINDOW_MS


async def test_batch_agrees_with_event_by_event_calls(v):
    client, vel, tag = v
    p = _policy(tag)
    evs = [_ev(i, T0 + i * 7_919 % (3 * WINDOW_MS), 10 + i,
               event=("order.paid", "order.created")[i % 2], customer=f"c{i % 3}",
               ip=f"i{i % 2}") for i in range(200)]
    one = [await vel.features(p, e) for e in evs]
    other = Velocity(client, prefix=f"ktest:{tag}:w:")
    res = await other.batch([([(p, other.prepare(p, e))], []) for e in evs])
    assert [f[p.name] for _, f in res] == one


async def test_a_sum_past_two_to_the_53_fails_instead_of_rounding(v):
    """Counts and sums are added in Lua numbers (doubles): exact below 2^53, and past
    that the script fails (the batch is retried event by event, the event dead-lettered),
    never a rounded total."""
    from redis.exceptions import ResponseError

    _, vel, tag = v
    p = _policy(tag)
    big = 2**53 - 10
    assert await vel.features(p, _ev(1, T0, big)) == {"n": 1, "amt": big, "ip": 0}
    with pytest.raises(ResponseError, match="2\\^53"):
        await vel.features(p, _ev(2, T0 + 1, 100))
    # Nothing of the failed call was written: the total is still exact.
    assert await vel.features(p, _ev(3, T0 + 2, 1)) == {"n": 2, "amt": big + 1, "ip": 0}


async def test_an_amount_past_two_to_the_53_fails_on_every_delivery(v):
    """Checked before the once-only marker: a retry must not read it as already recorded
    (and so never count it)."""
    from redis.exceptions import ResponseError

    _, vel, tag = v
    p = _policy(tag)
    for _ in range(2):  # the redelivery fails the same way
        with pytest.raises(ResponseError, match="2\\^53"):
            await vel.features(p, _ev(1, T0, 2**53))
    assert await vel.features(p, _ev(2, T0 + 1, 5)) == {"n": 1, "amt": 5, "ip": 0}
