"""The risk worker's hand-packed commands on the real Redis: replies in order, error
replies, a script Redis does not know (loaded and re-sent once), and a connection that
fails mid-call never handing a half-read reply to the next caller."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from kameng.workers.risk.resp import Lane, Script, pack


@pytest.fixture
async def client(redis_url):
    c = aioredis.from_url(redis_url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    yield c, tag
    async for key in c.scan_iter(match=f"ktest:{tag}:*"):
        await c.delete(key)
    await c.aclose()


async def test_several_commands_in_one_write_reply_in_order(client):
    c, tag = client
    lane = Lane(c)
    k = f"ktest:{tag}:k"
    got = await lane.call([pack(["SET", k, "顾客"]), pack(["GET", k]),
                           pack(["INCRBY", k, 1]), pack(["STRLEN", k])])
    assert got[:2] == ["OK", "顾客"]
    assert isinstance(got[2], ResponseError)  # an error reply, in its place
    assert got[3] == len("顾客".encode())
    assert await c.get(k) == "顾客"  # and the connection is still in step


async def test_an_unknown_script_is_loaded_and_sent_once_more(client):
    c, tag = client
    k = f"ktest:{tag}:n"
    s = Script("return redis.call('INCR', KEYS[1])")
    await c.script_flush()
    assert await Lane(c).scripts([(s, s.command([k], []))]) == [1]
    assert await Lane(c).scripts([(s, s.command([k], []))]) == [2]  # known now
    # Two calls, one of them unknown: only that one is re-sent (the other ran once).
    other = Script(f"return redis.call('INCRBY', KEYS[1], 10) -- {tag}")
    got = await Lane(c).scripts([(s, s.command([k], [])), (other, other.command([k], []))])
    assert got == [3, 13]
    assert int(await c.get(k)) == 13


async def test_a_script_error_raises(client):
    c, _ = client
    s = Script("return redis.call('NOSUCHCOMMAND')")
    with pytest.raises(ResponseError):
        await Lane(c).scripts([(s, s.command([], []))])


async def test_a_cancelled_call_drops_its_connection(client):
    """A call cancelled while its reply is on the way must not leave that reply for the
    next command on the same connection."""
    import asyncio

    c, tag = client
    lane = Lane(c)
    slow = Script("local t = redis.call('TIME') local s = tonumber(t[1]) * 1e6 + t[2] "
                  "while true do local u = redis.call('TIME') "
                  "if tonumber(u[1]) * 1e6 + u[2] - s > 200000 then break end end "
                  "return 'slow'")
    await c.script_load(slow.source)
    task = asyncio.create_task(lane.call([slow.command([], [])]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    k = f"ktest:{tag}:after"
    assert await lane.call([pack(["SET", k, "v"]), pack(["GET", k])]) == ["OK", "v"]


async def test_a_pooled_connection_redis_closed_is_replaced_on_the_next_call(
        client, redis_url):
    """After a Redis restart or an idle timeout, the pool's connection is dead; the next
    script call goes through on a new one instead of failing its batch (the client's
    pool checks a connection as it hands it out, which the lane relies on)."""
    c, tag = client
    k = f"ktest:{tag}:r"
    s = Script("return redis.call('INCR', KEYS[1])")
    lane = Lane(c)
    assert await lane.scripts([(s, s.command([k], []))]) == [1]
    # The pooled connection the lane used (the pool hands the last one back first).
    (conn_id,) = await lane.call([pack(["CLIENT", "ID"])])
    killer = aioredis.from_url(redis_url)
    try:
        assert await killer.execute_command("CLIENT", "KILL", "ID", conn_id) == 1
    finally:
        await killer.aclose()
    assert await lane.scripts([(s, s.command([k], []))]) == [2]
