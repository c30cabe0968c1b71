"""Consumer-group machinery shared by the risk and settlement workers.

Every sub-site writes its order events to its own stream (``kameng:orders:<site>``). A
worker is a *group* (``settlement``, ``risk``); each replica is a *consumer* in it, so
Redis hands every entry to exactly one replica at a time. Delivery is at-least-once:

* an entry is acknowledged (``XACK``) only after the handler has applied it, so a replica
  that dies mid-batch leaves its entries pending, and another replica claims them
  (``XAUTOCLAIM``) once they have been idle for ``claim_idle_ms``;
* the handler must therefore be idempotent (the event id is the idempotency key) and
  atomic per call (one database transaction), so a failed batch applies nothing;
* when a batch fails, its entries are retried one by one, so one poison entry never holds
  back the others; an entry delivered ``max_deliveries`` times goes to the group's
  dead-letter stream (``kameng:dead:<group>``) with the error, and is acknowledged;
* trimming never drops an entry that a group still needs: a stream is cut below the
  oldest entry that any group has pending or not yet read, and not at all while a group
  named in ``required_groups`` does not exist yet.

Sites are discovered by scanning for streams, so a new sub-site's orders are picked up
within ``discover_seconds`` without any configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from kameng.contracts.events import ORDERS_PREFIX

from . import metrics

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX = "kameng:dead:"
# A handler failing with one of these says a backing service is away (PostgreSQL's
# OperationalError covers a refused or broken connection and a pool that timed out), not
# that the entry is bad: never a reason to dead-letter it.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, OSError, psycopg.OperationalError)
# The consumer groups of the order streams: each worker's own, and the one each must
# leave entries to before trimming them.
RISK_GROUP = "risk"
SETTLEMENT_GROUP = "settlement"
_READ_CHUNK = 256  # streams per XREADGROUP call: keeps one command's size bounded


@dataclass(frozen=True)
class Entry:
    """One stream entry handed to a handler."""

    stream: str
    id: str
    fields: dict[str, str]
    deliveries: int = 1

    @property
    def site(self) -> str:
        return self.stream.rsplit(":", 1)[-1]


# Returns None when done, or (``overlap``) an awaitable: the batch's second stage.
BatchHandler = Callable[[list[Entry]], Awaitable[Awaitable[Any] | None]]
# Called on a read-ahead batch as soon as it arrives (prefetch only): CPU work done there
# overlaps the database work of the batch being handled. Must not raise.
PrepareHook = Callable[[list[Entry]], None]
DeadLetterHook = Callable[[Entry, str], Awaitable[None]]


def default_consumer_name() -> str:
    # Unique per process: two replicas must never share a consumer name, or one would
    # acknowledge the other's work.
    return f"{socket.gethostname()}-{os.getpid()}"


def dead_letter_stream(group: str) -> str:
    return f"{DEAD_LETTER_PREFIX}{group}"


@dataclass
class ConsumerConfig:
    group: str
    consumer: str = field(default_factory=default_consumer_name)
    prefix: str = ORDERS_PREFIX
    batch: int = 500
    block_ms: int = 500
    claim_idle_ms: int = 15_000
    max_deliveries: int = 5
    discover_seconds: float = 5.0
    claim_seconds: float = 5.0
    trim_seconds: float = 60.0
    required_groups: tuple[str, ...] = ()
    # Consumers idle this long with nothing pending are removed from the group.
    forget_consumer_ms: int = 3_600_000
    # Read the next batch while the handler applies the current one (the settlement
    # worker turns it on; off by default so other groups keep their exact behaviour).
    prefetch: bool = False
    # Two-stage handlers (the risk worker turns it on; off by default): a handler may
    # return an awaitable, its second stage (store, publish). That stage and the ack then
    # run while the NEXT batch's first stage runs; at most one second stage is in flight,
    # and batches' second stages and acks keep their order. A crash leaves entries
    # pending exactly as before (acked only after their second stage).
    overlap: bool = False
    # With ``overlap``: how many second stages may be in flight at once (the risk worker:
    # 2, so one batch's store runs beside the next one's; the handler keeps what must stay
    # in order, such as publishing, in order itself). Acks may then complete out of
    # order: harmless, an entry is acked only after its own second stage.
    overlap_depth: int = 1
    # Discovery (a SCAN of the whole keyspace) in the background instead of in line
    # before a read (the risk worker turns it on; off by default): with millions of keys
    # (velocity counters, markers) a SCAN takes many round trips, and in line it held
    # every event behind it. The first discovery still runs in line (nothing to read
    # before it).
    background_discovery: bool = False


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)


def _fields(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    if isinstance(next(iter(raw)), str):
        # A client with decode_responses (the workers'): the map is str → str already;
        # converting every key and value again cost a tenth of a batch's CPU.
        return dict(raw)
    return {_s(k): _s(v) for k, v in raw.items()}


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def trim_floor(groups: list[dict[str, Any]], pending_min: dict[str, str | None],
               required: Iterable[str]) -> str | None:
    """The lowest entry id any group still needs, or None when nothing may be trimmed.

    ``groups`` is ``XINFO GROUPS`` (name, last-delivered-id, pending); ``pending_min``
    the oldest pending id per group. Entries below the floor are acknowledged (or were
    never meant for a group that exists) and may go.
    """
    names = {_s(g["name"]) for g in groups}
    if not groups or any(r not in names for r in required):
        return None
    floor: tuple[int, int] | None = None
    for g in groups:
        name = _s(g["name"])
        oldest = pending_min.get(name)
        need = oldest if oldest else _s(g["last-delivered-id"])
        key = _id_key(need)
        if not oldest:
            # Everything up to last-delivered is acknowledged: keep from the next id on.
            key = (key[0], key[1] + 1)
        floor = key if floor is None or key < floor else floor
    if floor is None or floor == (0, 1):
        return None
    return f"{floor[0]}-{floor[1]}"


class StreamConsumer:
    """One replica of a worker group over every ``<prefix><site>`` stream."""

    def __init__(self, redis: aioredis.Redis, config: ConsumerConfig, handler: BatchHandler,
                 on_dead_letter: DeadLetterHook | None = None,
                 prepare: PrepareHook | None = None) -> None:
        self.redis = redis
        self.cfg = config
        self.handler = handler
        self.on_dead_letter = on_dead_letter
        self.prepare = prepare
        self.streams: set[str] = set()
        self._next_discover = 0.0
        self._next_claim = 0.0
        self._next_trim = 0.0
        # The next read, already under way while the handler posts the current batch.
        self._prefetch: asyncio.Task[list[Entry]] | None = None
        # The previous batch's second stage and ack (``overlap``), still under way.
        self._inflight: collections.deque[asyncio.Task[int]] = collections.deque()
        # A discovery under way (``background_discovery``).
        self._discovery: asyncio.Task[set[str]] | None = None

    # --- discovery -------------------------------------------------------------------

    async def discover(self) -> set[str]:
        """Find every stream under the prefix and make sure the group exists on it."""
        found: set[str] = set()
        async for key in self.redis.scan_iter(match=f"{self.cfg.prefix}*", count=1000,
                                              _type="STREAM"):
            found.add(_s(key))
        for stream in found - self.streams:
            try:
                # From the beginning: events written before the worker first ran count too.
                await self.redis.xgroup_create(stream, self.cfg.group, id="0")
                log.info("joined stream", extra={"stream": stream, "group": self.cfg.group})
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self.streams = found
        return found

    # --- reading and claiming --------------------------------------------------------

    async def read(self, block_ms: int | None = None) -> list[Entry]:
        if not self.streams:
            return []
        out: list[Entry] = []
        names = sorted(self.streams)
        # BLOCK 0 would wait forever: 0 here means do not block at all.
        block = self.cfg.block_ms if block_ms is None else block_ms
        for i in range(0, len(names), _READ_CHUNK):
            chunk = names[i:i + _READ_CHUNK]
            try:
                resp = await self.redis.xreadgroup(
                    self.cfg.group, self.cfg.consumer, dict.fromkeys(chunk, ">"),
                    count=self.cfg.batch, block=(block or None) if i == 0 else None)
            except ResponseError as exc:
                # NOGROUP: a stream was deleted and re-created. UNBLOCKED: a stream this
                # read was blocked on was deleted (a site's streams go with the site).
                # Either way the list of streams is stale: find them again next round
                # (before: UNBLOCKED ended the worker process).
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    raise
                self.streams.clear()
                return out
            for stream, entries in resp or []:
                out += [Entry(_s(stream), _s(eid), _fields(f)) for eid, f in entries
                        if f is not None]
        return out

    async def claim(self) -> list[Entry]:
        """Take over entries that another (probably dead) consumer left pending."""
        out: list[Entry] = []
        for stream in sorted(self.streams):
            claimed: list[tuple[str, Any]] = []
            cursor = "0-0"
            while len(out) + len(claimed) < self.cfg.batch:
                try:
                    resp = await self.redis.xautoclaim(
                        stream, self.cfg.group, self.cfg.consumer, self.cfg.claim_idle_ms,
                        start_id=cursor, count=self.cfg.batch - len(out) - len(claimed))
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        break
                    raise
                cursor = _s(resp[0])
                claimed += [(_s(eid), f) for eid, f in resp[1] if f is not None]
                deleted = [_s(d) for d in (resp[2] if len(resp) > 2 else [])]
                if deleted:  # trimmed or deleted under us: nothing left to do but forget them
                    await self.redis.xack(stream, self.cfg.group, *deleted)
                if cursor == "0-0":
                    break
            if not claimed:
                continue
            counts = await self._deliveries(stream, [eid for eid, _ in claimed])
            out += [Entry(stream, eid, _fields(f), counts.get(eid, 1)) for eid, f in claimed]
            metrics.CLAIMED.labels(self.cfg.group).inc(len(claimed))
            if len(out) >= self.cfg.batch:
                break
        return out

    async def _deliveries(self, stream: str, ids: list[str]) -> dict[str, int]:
        ordered = sorted(ids, key=_id_key)
        rows = await self.redis.xpending_range(
            stream, self.cfg.group, min=ordered[0], max=ordered[-1], count=len(ordered) * 2,
            consumername=self.cfg.consumer)
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    # --- processing ------------------------------------------------------------------

    async def process(self, entries: list[Entry]) -> int:
        """Apply entries through the handler; returns how many were acknowledged."""
        if not entries:
            return 0
        try:
            second = await self.handler(entries)
            if inspect.isawaitable(second) and not self.cfg.overlap:
                await second  # a two-stage handler without overlap: both stages, in line
                second = None
        except Exception as exc:
            log.warning("batch failed, retrying entries one by one",
                        extra={"group": self.cfg.group, "size": len(entries),
                               "error": type(exc).__name__})
            done = await self.settle()
            return done + await self._one_by_one(entries)
        if inspect.isawaitable(second):
            # Overlap: this batch's first stage ran while earlier batches' second stages
            # were in flight; wait for the oldest until fewer than overlap_depth remain,
            # then let this one's run while the caller reads and starts the next batch.
            done = 0
            while len(self._inflight) >= max(1, self.cfg.overlap_depth):
                done += await self._inflight.popleft()
            self._inflight.append(asyncio.create_task(self._second(entries, second)))
            return done
        await self._ack(entries)
        metrics.PROCESSED.labels(self.cfg.group).inc(len(entries))
        return len(entries)

    async def settle(self) -> int:
        """Wait for every second stage in flight (``overlap``); returns what they acked."""
        done = 0
        while self._inflight:
            done += await self._inflight.popleft()
        return done

    async def _second(self, entries: list[Entry], second: Awaitable[Any]) -> int:
        try:
            await second
        except (RedisConnectionError, OSError) as exc:
            # Left pending: claimed again after claim_idle_ms, like a crash.
            log.warning("redis unavailable in a batch's second stage; left pending",
                        extra={"group": self.cfg.group, "error": type(exc).__name__})
            return 0
        except Exception as exc:
            log.warning("batch failed, retrying entries one by one",
                        extra={"group": self.cfg.group, "size": len(entries),
                               "error": type(exc).__name__})
            try:
                return await self._one_by_one(entries)
            except (RedisConnectionError, OSError):
                return 0
        try:
            await self._ack(entries)
        except (RedisConnectionError, OSError):
            return 0  # applied, not acknowledged: redelivered, and idempotent
        metrics.PROCESSED.labels(self.cfg.group).inc(len(entries))
        return len(entries)

    async def _one_by_one(self, entries: list[Entry]) -> int:
        acked = 0
        for e in entries:
            try:
                second = await self.handler([e])
                if inspect.isawaitable(second):
                    await second
            except Exception as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    # The database (or Redis) is away, not this entry at fault: it and the
                    # rest stay pending, claimed again after claim_idle_ms, and an outage
                    # never counts toward dead-lettering (before: a PostgreSQL restart of a
                    # few seconds sent good events to the dead letters, out of the ledger).
                    metrics.FAILED.labels(self.cfg.group).inc()
                    log.warning("a backing service is unavailable; entries left pending",
                                extra={"group": self.cfg.group, "left": len(entries) - acked,
                                       "error": type(exc).__name__})
                    return acked
                reason = f"{type(exc).__name__}: {str(exc)[:300]}"
                if e.deliveries >= self.cfg.max_deliveries:
                    await self.dead_letter(e, reason)
                    acked += 1
                else:
                    # Left pending: claimed again (by anyone) after claim_idle_ms, which
                    # is the retry back-off.
                    metrics.FAILED.labels(self.cfg.group).inc()
                    log.warning("entry failed; will be retried",
                                extra={"stream": e.stream, "id": e.id,
                                       "deliveries": e.deliveries,
                                       "error": type(exc).__name__})
                continue
            await self._ack([e])
            metrics.PROCESSED.labels(self.cfg.group).inc()
            acked += 1
        return acked

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        # Written first, acknowledged second: a crash in between re-delivers the entry,
        # which then lands in the dead-letter stream twice rather than never.
        await self.redis.xadd(dead_letter_stream(self.cfg.group), {
            **entry.fields, "dl_stream": entry.stream, "dl_id": entry.id,
            "dl_error": reason, "dl_deliveries": str(entry.deliveries),
        })
        await self._ack([entry])
        metrics.DEAD_LETTERS.labels(self.cfg.group).inc()
        log.error("entry moved to the dead-letter stream",
                  extra={"stream": entry.stream, "id": entry.id, "group": self.cfg.group})
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(entry, reason)
            except Exception:  # an Event that cannot be posted must not stop the worker
                log.exception("dead-letter hook failed")

    async def _ack(self, entries: list[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.cfg.group, *ids)
            await pipe.execute()

    # --- housekeeping ----------------------------------------------------------------

    async def trim(self) -> int:
        """Cut every stream below what all groups still need; returns entries removed."""
        removed = 0
        for stream in sorted(self.streams):
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue
            pending_min: dict[str, str | None] = {}
            for g in groups:
                name = _s(g["name"])
                if int(g.get("pending", 0)):
                    summary = await self.redis.xpending(stream, name)
                    pending_min[name] = _s(summary["min"]) if summary.get("min") else None
                else:
                    pending_min[name] = None
            floor = trim_floor(groups, pending_min, self.cfg.required_groups)
            if floor is not None:
                removed += int(await self.redis.xtrim(stream, minid=floor, approximate=False))
            await self._forget_idle_consumers(stream)
        return removed

    async def _forget_idle_consumers(self, stream: str) -> None:
        try:
            consumers = await self.redis.xinfo_consumers(stream, self.cfg.group)
        except ResponseError:
            return
        for c in consumers:
            name = _s(c["name"])
            if name != self.cfg.consumer and not int(c.get("pending", 0)) \
                    and int(c.get("idle", 0)) > self.cfg.forget_consumer_ms:
                await self.redis.xgroup_delconsumer(stream, self.cfg.group, name)

    async def lag(self) -> dict[str, int]:
        """Entries not yet delivered to the group, per site (Redis 7 reports it)."""
        out: dict[str, int] = {}
        for stream in sorted(self.streams):
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue
            for g in groups:
                if _s(g["name"]) == self.cfg.group:
                    lag = g.get("lag")
                    out[stream.rsplit(":", 1)[-1]] = int(lag) if lag is not None else 0
        return out

    # --- the loop --------------------------------------------------------------------

    async def step(self) -> int:
        """One round: discovery, claims and housekeeping when due, then a read."""
        now = time.monotonic()
        if now >= self._next_discover:
            self._next_discover = now + self.cfg.discover_seconds
            if self.cfg.background_discovery and self.streams:
                self._discover_in_background()
            else:
                await self.discover()
        done = 0
        if now >= self._next_claim:
            self._next_claim = now + self.cfg.claim_seconds
            done += await self.process(await self.claim())
        if now >= self._next_trim:
            self._next_trim = now + self.cfg.trim_seconds
            await self.trim()
            for site, n in (await self.lag()).items():
                metrics.LAG.labels(self.cfg.group, site).set(n)
        if self._prefetch is not None:
            task, self._prefetch = self._prefetch, None
            entries = await task
        else:
            entries = await self.read()
        if not entries and not self.streams:
            # Nothing to block on yet: XREADGROUP needs a stream. Wait for discovery.
            await asyncio.sleep(min(self.cfg.discover_seconds, self.cfg.block_ms / 1000))
        if entries and self.cfg.prefetch:
            # Overlap: the next batch travels from Redis (and is parsed) while this one is
            # posted and committed. Order per stream still holds: batches are handled one
            # after the other; only the reading runs ahead. A crash leaves the read-ahead
            # entries pending, claimed later like any other (at-least-once, idempotent).
            self._prefetch = asyncio.create_task(self._read_ahead())
        done += await self.process(entries)
        return done

    def _discover_in_background(self) -> None:
        task = self._discovery
        if task is not None and not task.done():
            return  # the last one is still scanning: never two at once
        if task is not None and not task.cancelled() and task.exception() is not None:
            # Reported here, retried now: the streams known so far keep being read.
            log.warning("stream discovery failed; retrying",
                        extra={"group": self.cfg.group,
                               "error": type(task.exception()).__name__})
        self._discovery = asyncio.create_task(self.discover())

    async def _stop_discovery(self) -> None:
        task, self._discovery = self._discovery, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RedisConnectionError, OSError,
                                 ResponseError):
            await task

    async def _read_ahead(self) -> list[Entry]:
        entries = await self.read()
        if entries and self.prepare is not None:
            # Runs while the handler awaits its database: decoding the next batch here
            # overlaps with the current one's posting instead of following it.
            self.prepare(entries)
        return entries

    async def _drop_prefetch(self) -> None:
        task, self._prefetch = self._prefetch, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        try:
            entries = await task
        except (asyncio.CancelledError, RedisConnectionError, OSError, ResponseError):
            return  # whatever Redis handed over stays pending: claimed later
        # Read already: post them now rather than leave them to a claim after
        # claim_idle_ms (a clean stop should not delay anyone's money).
        await self.process(entries)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except (RedisConnectionError, OSError) as exc:
                    log.warning("redis unavailable; retrying",
                                extra={"error": type(exc).__name__})
                    await self._drop_prefetch()
                    await self.settle()
                    await asyncio.sleep(1.0)
        finally:
            await self._stop_discovery()
            await self._drop_prefetch()
            await self.settle()


def add_trim_after(p: argparse.ArgumentParser, other: str) -> None:
    """``--trim-after``: the groups that must have read an entry before this worker trims
    it, beside its own. Without the other worker's group, an entry written before that
    group existed (a new site's first orders, the other worker not deployed yet or down
    since) was trimmed unread: a sale never in the ledger."""
    p.add_argument("--trim-after", metavar="GROUPS", default=other,
                   help="comma-separated consumer groups that must have read an entry "
                   "before it is trimmed (default: %(default)s; '' when that worker is "
                   "not deployed)")


def groups_of(text: str) -> tuple[str, ...]:
    return tuple(g for g in (x.strip() for x in text.split(",")) if g)
