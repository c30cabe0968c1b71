"""The consumer-group machinery on real Redis: shared work, claims of a dead replica's
entries, dead letters, discovery of new sites and trimming that keeps what is pending."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
import redis.asyncio as aioredis

from kameng.workers.streams import ConsumerConfig, Entry, StreamConsumer, dead_letter_stream


@pytest.fixture
async def r(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    prefix = f"ktest:{uuid.uuid4().hex[:8]}:orders:"
    yield client, prefix
    async for key in client.scan_iter(match=prefix.replace(":orders:", ":*")):
        await client.delete(key)
    await client.aclose()


def _cfg(prefix: str, group: str, consumer: str, **kw) -> ConsumerConfig:
    base = dict(batch=50, block_ms=50, claim_idle_ms=200, claim_seconds=0.0,
                discover_seconds=0.0, trim_seconds=3600.0)
    base.update(kw)
    return ConsumerConfig(group=group, consumer=consumer, prefix=prefix, **base)


async def _fill(client, prefix: str, sites: list[str], n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        for s in sites:
            ids.append(await client.xadd(prefix + s, {"event_id": f"{s}-{i}", "n": str(i)}))
    return ids


async def _drain(consumers: list[StreamConsumer], want: int, seen: list,
                 within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while len(seen) < want:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(seen)}/{want} handled"
        for c in consumers:
            await c.step()


async def test_two_replicas_share_every_entry_exactly_once(r):
    client, prefix = r
    await _fill(client, prefix, ["a", "b", "c"], 40)
    handled: list[tuple[str, str]] = []

    async def handler(batch: list[Entry]) -> None:
        handled.extend((e.stream, e.fields["event_id"])
                       for e in batch)

    c1 = StreamConsumer(client, _cfg(prefix, "g", "one", batch=7), handler)
    c2 = StreamConsumer(client, _cfg(prefix, "g", "two", batch=7), handler)
    await _drain([c1, c2], 120, handled)
    assert len(handled) == 120
    assert len(set(handled)) == 120, "an entry was handled twice"
    for s in ("a", "b", "c"):
        info = await client.xinfo_groups(prefix + s)
        assert info[0]["pending"] == 0


async def test_dead_replicas_pending_entries_are_claimed_by_another(r):
    client, prefix = r
    await _fill(client, prefix, ["a"], 10)
    dead = StreamConsumer(client, _cfg(prefix, "g", "dead"), lambda b: asyncio.sleep(0))
    await dead.discover()
    taken = await dead.read(block_ms=0)  # read, never acknowledged: the replica "dies"
    assert len(taken) == 10
    handled: list[Entry] = []

    async def handler(batch: list[Entry]) -> None:
        handled.extend(batch)

    alive = StreamConsumer(client, _cfg(prefix, "g", "alive"), handler)
    await alive.discover()
    assert await alive.read(block_ms=0) == []  # nothing new: all 10 are pending at "dead"
    await asyncio.sleep(0.3)  # > claim_idle_ms
    await _drain([alive], 10, handled)
    assert sorted(e.fields["n"] for e in handled) == sorted(str(i) for i in range(10))
    assert all(e.deliveries == 2 for e in handled)
    assert (await client.xpending(prefix + "a", "g"))["pending"] == 0


async def test_poison_entry_goes_to_dead_letters_and_never_blocks_the_rest(r):
    client, prefix = r
    await _fill(client, prefix, ["a"], 5)
    await client.xadd(prefix + "a", {"event_id": "poison", "n": "x"})
    await _fill(client, prefix, ["a"], 5, start=5)
    handled: list[str] = []
    dead_seen: list[tuple[str, str]] = []

    async def handler(batch: list[Entry]) -> None:
        if any(e.fields["n"] == "x" for e in batch):
            raise ValueError("cannot post this")
        handled.extend(e.fields["event_id"] for e in batch)

    async def hook(entry: Entry, reason: str) -> None:
        dead_seen.append((entry.fields["event_id"], reason))

    c = StreamConsumer(client, _cfg(prefix, "settle", "one", max_deliveries=3), handler,
                       on_dead_letter=hook)
    await c.step()
    assert len(handled) == 10, "the good entries wait for nothing"
    deadline = asyncio.get_running_loop().time() + 20
    while not dead_seen:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.25)
        await c.step()
    assert dead_seen[0][0] == "poison"
    assert "ValueError: cannot post this" in dead_seen[0][1]
    dl = await client.xrange(dead_letter_stream("settle"))
    mine = [f for _, f in dl if f.get("dl_stream") == prefix + "a"]
    assert len(mine) == 1
    assert mine[0]["dl_deliveries"] == "3"
    assert (await client.xpending(prefix + "a", "settle"))["pending"] == 0
    assert sorted(Counter(handled).values()) == [1] * 10, "good entries were posted once"
    await client.delete(dead_letter_stream("settle"))


async def test_a_new_site_is_discovered_and_read_from_its_first_event(r):
    client, prefix = r
    handled: list[str] = []

    async def handler(batch: list[Entry]) -> None:
        handled.extend(e.site for e in batch)

    c = StreamConsumer(client, _cfg(prefix, "g", "one"), handler)
    await c.step()
    assert handled == []
    await _fill(client, prefix, ["late"], 3)  # written before the group exists
    await _drain([c], 3, handled)
    assert handled == ["late"] * 3


async def test_trim_keeps_what_any_group_still_needs(r):
    client, prefix = r
    ids = await _fill(client, prefix, ["a"], 10)
    handled: list[Entry] = []

    async def handler(batch: list[Entry]) -> None:
        handled.extend(batch)

    settle = StreamConsumer(client, _cfg(prefix, "settlement", "s",
                                         required_groups=("settlement", "risk")), handler)
    await _drain([settle], 10, handled)
    # "risk" has not joined yet: nothing may go, it would never see these events.
    assert await settle.trim() == 0
    assert await client.xlen(prefix + "a") == 10

    risk = StreamConsumer(client, _cfg(prefix, "risk", "r"), handler)
    await risk.discover()
    first_four = await client.xreadgroup("risk", "r", {prefix + "a": ">"}, count=4)
    await client.xack(prefix + "a", "risk", *[eid for eid, _ in first_four[0][1][:3]])
    # risk acknowledged 3 and holds the 4th pending: only the first 3 may be cut.
    assert await settle.trim() == 3
    left = [eid for eid, _ in await client.xrange(prefix + "a")]
    assert left == ids[3:]
    assert first_four[0][1][3][0] == left[0], "the pending entry survived the trim"


async def test_an_outage_of_the_database_never_dead_letters_good_entries(r):
    """Entries failing because PostgreSQL is away (a restart, a failover) stay pending
    however often they are delivered meanwhile, and are posted once it is back; a bad
    entry among them still goes to the dead letters."""
    import psycopg

    client, prefix = r
    await _fill(client, prefix, ["a"], 3)
    await client.xadd(prefix + "a", {"event_id": "poison", "n": "x"})
    down = True
    handled: list[str] = []
    dead: list[str] = []

    async def handler(batch: list[Entry]) -> None:
        if down:
            raise psycopg.OperationalError("connection refused")
        if any(e.fields["n"] == "x" for e in batch):
            raise ValueError("cannot post this")
        handled.extend(e.fields["event_id"] for e in batch)

    async def hook(entry: Entry, reason: str) -> None:
        dead.append(entry.fields["event_id"])

    c = StreamConsumer(client, _cfg(prefix, "settle", "one", max_deliveries=2,
                                    claim_idle_ms=50), handler, on_dead_letter=hook)
    for _ in range(12):  # delivered far more than max_deliveries times while "down"
        await c.step()
        await asyncio.sleep(0.06)
    pending = await client.xpending_range(prefix + "a", "settle", "-", "+", 10)
    assert len(pending) == 4
    assert min(p["times_delivered"] for p in pending) > 2
    assert dead == []
    down = False
    deadline = asyncio.get_running_loop().time() + 20
    while len(handled) < 3 or not dead:
        assert asyncio.get_running_loop().time() < deadline, (handled, dead)
        await c.step()
        await asyncio.sleep(0.06)
    assert sorted(handled) == ["a-0", "a-1", "a-2"]
    assert dead == ["poison"]
    assert (await client.xpending(prefix + "a", "settle"))["pending"] == 0
    await client.delete(dead_letter_stream("settle"))


async def test_a_stream_deleted_under_a_blocked_read_is_forgotten_not_fatal(r):
    """A site's streams go with the site: a worker blocked reading one must carry on
    (before: Redis's UNBLOCKED error ended the worker process)."""
    client, prefix = r
    await _fill(client, prefix, ["a", "b"], 1)
    c = StreamConsumer(client, _cfg(prefix, "g", "one", block_ms=5000), lambda b: asyncio.sleep(0))
    await c.discover()
    assert await c.read(block_ms=0)  # the two entries: now nothing new, a read blocks
    blocked = asyncio.create_task(c.read())
    await asyncio.sleep(0.3)
    await client.delete(prefix + "a")
    assert await asyncio.wait_for(blocked, 5) == []
    assert c.streams == set()  # found again at the next discovery
    assert await c.discover() == {prefix + "b"}
