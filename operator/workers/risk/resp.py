"""The risk worker's hot Redis calls, packed by hand and sent on redis-py's lowest level.

redis-py packs every argument in Python with type checks (~680 ns an argument here), and
a batch of 200 events sends ~7,000 of them: packing alone was a third of the worker's
CPU. :func:`pack` builds the same RESP bytes (unit-tested byte for byte against
redis-py's own packer) at ~85 ns an argument. :class:`Lane` sends one or several packed
commands on a connection of the client's pool in ONE write and reads their replies with
the client's own parser (hiredis when installed), so replies, errors and connection
failures are exactly what redis-py would give; only the packing and the per-command
bookkeeping are skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

# "$<n>" per length: most arguments are short, and a lookup beats formatting.
_LEN = [b"$%d" % i for i in range(1024)]


def _b(a: str | bytes | int) -> bytes:
    if type(a) is str:
        return a.encode()
    if type(a) is bytes:
        return a
    if type(a) is int:
        return b"%d" % a
    raise TypeError(f"cannot send {type(a).__name__} to Redis")  # floats, None: a bug


def pack(args: Sequence[str | bytes | int]) -> bytes:
    """One command as RESP: ``*<n>\\r\\n`` then ``$<len>\\r\\n<arg>\\r\\n`` per argument
    (str as UTF-8, int as its decimal digits), byte for byte what redis-py sends. The
    command name is one word (redis-py would also split "SCRIPT LOAD" in two)."""
    try:
        enc = [a.encode() for a in args]  # type: ignore[union-attr]  # the usual case: all str
    except AttributeError:
        enc = [_b(a) for a in args]
    parts = [b"*%d" % len(enc)]
    for e in enc:
        n = len(e)
        parts.append(_LEN[n] if n < 1024 else b"$%d" % n)
        parts.append(e)
    parts.append(b"")  # the last argument's \r\n
    return b"\r\n".join(parts)


class Script:
    """A Lua script called with EVALSHA (loaded on first use and after a Redis restart,
    as redis-py's ``Script`` does)."""

    def __init__(self, source: str) -> None:
        self.source = source
        # SHA-1 is what Redis names scripts by (EVALSHA), not a security measure.
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[str | bytes | int]) -> bytes:
        return pack(["EVALSHA", self.sha, str(len(keys)), *keys, *args])


class Lane:
    """Packed commands over a connection of ``redis``'s pool."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def call(self, commands: Sequence[bytes]) -> list[Any]:
        """Send ``commands`` (from :func:`pack`) in one write; returns their replies in
        order, a Redis error reply as its ``ResponseError`` (like a pipeline with
        ``raise_on_error=False``). A connection failure raises, and the connection is
        dropped: a half-read reply must never be read by the next command."""
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(commands, check_health=False)
            out: list[Any] = []
            for _ in commands:
                try:
                    out.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the stream is still in step
                    out.append(exc)
            return out
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    async def scripts(self, calls: Sequence[tuple[Script, bytes]]) -> list[Any]:
        """Script calls (``(script, script.command(...))``) in one round trip; a script
        Redis does not know (first use, or Redis restarted) is loaded and its call
        re-sent. Any other error reply raises."""
        out = await self.call([c for _, c in calls])
        missing = [i for i, r in enumerate(out) if isinstance(r, NoScriptError)]
        if missing:
            # Loaded, then only the calls that did not run are sent again (a call that
            # ran must not run twice: its effects are not all idempotent).
            for i in missing:
                await self.redis.script_load(calls[i][0].source)
            again = await self.call([calls[i][1] for i in missing])
            for i, r in zip(missing, again, strict=True):
                out[i] = r
        for r in out:
            if isinstance(r, ResponseError):
                raise r
        return out
