"""Velocity counters shared by every replica of the risk worker, in Redis.

One hash per (policy, feature, key value) holding time buckets of 1/60 of the feature's
window (``BUCKETS``): field ``<bucket number>`` → the count or the sum of amounts in that
bucket, ``hi`` → the newest bucket seen, ``t`` → the running total of the window ending at
``hi``. Recording an event is two ``HINCRBY``; reading the window at ``hi`` is the running
total, kept up to date by subtracting each bucket once as it leaves the window. So the
cost per event and feature is constant, whatever the traffic (the sorted sets before this
cost a member per event and feature, and a sum read every member of the window).

Granularity: the window is measured in whole buckets. An event counts from the moment it
happens until between ``window − window/60`` and ``window`` later (a 10-minute feature
forgets an event 590 to 600 seconds after it). Nothing is capped: counts and sums are
64-bit integers, and a counter's size is bounded by its buckets (two windows are kept so
that late events, read at their own time, still see the window before them).

Idempotent per event: ONE once-only marker per event (``SET NX``, key ``<prefix>!<event
id>``, living two of its longest windows: after that a redelivery would record only into
buckets no read looks at any more) guards every feature's recording; a redelivered event
only reads. Atomic across replicas: a batch is one Lua script.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from .policy import CompiledPolicy
from .resp import Lane, Script

PREFIX = "kameng:risk:v:"
BUCKETS = 60  # per window: the granularity (documented in docs/risk.md and the CRD)

# One feature over one event: record (when asked) and read the window ending at the
# event's bucket. Shared by the per-event script (backtests) and the batch script.
_FEATURE = """
-- Integers as exact decimal strings (a Lua number handed to Redis or returned could be
-- formatted with an exponent).
local function d(x) return string.format('%d', x) end
local function feature(key, now, g, w, v, rec, wall)
  local b = math.floor(now / g)
  -- One read of the newest bucket and the running total (a call from Lua costs more than
  -- the field it reads).
  local st = redis.call('HMGET', key, 'hi', 't')
  local hi, total = tonumber(st[1]), tonumber(st[2])
  if hi ~= nil and b - hi >= 2 * w then
    -- Everything kept is older than two windows: no read at or after b can see it.
    redis.call('DEL', key)
    hi = nil
  end
  if hi == nil then
    if not rec then return '0' end
    redis.call('HSET', key, d(b), v, 'hi', d(b), 't', v)
    -- Kept until its newest bucket is two windows old (no GT here: GT never sets a TTL
    -- on a key that has none).
    redis.call('PEXPIRE', key, d(math.max((b + 2 * w) * g - wall, w * g)))
    return v
  end
  if b > hi then
    -- The window moves on: buckets (hi - w, min(hi, b - w)] leave the running total, and
    -- buckets older than two windows are dropped. Each bucket pays this once.
    local leave = {}
    for x = hi - w + 1, math.min(hi, b - w) do leave[#leave + 1] = d(x) end
    if #leave > 0 then
      local s = 0
      for _, x in ipairs(redis.call('HMGET', key, unpack(leave))) do
        if x then s = s + tonumber(x) end
      end
      if s ~= 0 then total = redis.call('HINCRBY', key, 't', d(-s)) end
    end
    local gone = {}
    for x = math.max(hi - 2 * w + 1, 0), b - 2 * w do gone[#gone + 1] = d(x) end
    if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
    redis.call('HSET', key, 'hi', d(b))
    hi = b
    redis.call('PEXPIRE', key, d(math.max((b + 2 * w) * g - wall, w * g)), 'GT')
  end
  if b == hi then
    if rec then
      redis.call('HINCRBY', key, d(b), v)
      return d(redis.call('HINCRBY', key, 't', v))
    end
    return d(total)
  end
  -- A late event (older than the newest): recorded in its bucket while it is kept, and
  -- read as the window ending at its own bucket.
  if b <= hi - 2 * w then return '0' end
  if rec then
    redis.call('HINCRBY', key, d(b), v)
    if b > hi - w then redis.call('HINCRBY', key, 't', v) end
  end
  local want = {}
  for x = math.max(b - w + 1, hi - 2 * w + 1), b do want[#want + 1] = d(x) end
  local s = 0
  for _, x in ipairs(redis.call('HMGET', key, unpack(want))) do
    if x then s = s + tonumber(x) end
  end
  return d(s)
end
local t = redis.call('TIME')
local wall = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# A whole batch in ONE script call (the worker's hot path; a backtest sends one event a
# call). Events run in order, so each sees the ones before it, exactly as separate calls
# would. Arguments are compact (redis-py packs every argument in Python, so four per
# feature and event cost more than the counting): the features' shapes once a call, then
# per event one reference per feature.
# KEYS: per event: its marker, its feature hashes (every policy's, in order), its snooze
# keys. ARGV: number of shapes S, then per shape: bucket_ms, buckets, aggregate ("c"|"s");
# then per event: ts_ms, marker ttl_ms (0: records nothing), amount, number of feature
# keys, number of snooze keys, then per feature its shape's number (negative: read only).
# Returns per event: 1 when a snooze key exists (else 0), then per feature its value as a
# decimal string.
_BATCH = _FEATURE + """
local shapes = {}
local a = 2
for i = 1, tonumber(ARGV[1]) do
  shapes[i] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2] == 's'}
  a = a + 3
end
local out = {}
local k = 1
while a <= #ARGV do
  local now = tonumber(ARGV[a])
  local ttl = ARGV[a + 1]
  local amount = ARGV[a + 2]
  local nkeys = tonumber(ARGV[a + 3])
  local nsnooze = tonumber(ARGV[a + 4])
  a = a + 5
  local snoozed = 0
  for j = 1, nsnooze do
    if redis.call('EXISTS', KEYS[k + nkeys + j]) == 1 then snoozed = 1 end
  end
  out[#out + 1] = snoozed
  local rec = ttl ~= '0' and redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl)
  for j = 1, nkeys do
    local ref = tonumber(ARGV[a])
    local shape = shapes[math.abs(ref)]
    out[#out + 1] = feature(KEYS[k + j], now, shape[1], shape[2],
                            shape[3] and amount or '1', rec and ref > 0, wall)
    a = a + 1
  end
  k = k + 1 + nkeys + nsnooze
end
return out
"""


Shape = tuple[int, int, str]  # bucket_ms, buckets, "c" (count) | "s" (sum)
# Shapes known to a Velocity before it starts afresh (policies are few; recompiled ones
# add shapes, and the numbering must not grow without bound).
_MAX_SHAPES = 256


@dataclass
class Call:
    """One policy's features over one event: what to ask Redis."""

    names: list[str]
    keys: list[str]
    refs: list[str]  # per key: its shape's number as a string, negative: read only
    zeros: dict[str, int]
    ttl_ms: int = 0  # the event marker's life for this policy (0: records nothing)
    ts: int = 0
    amount: int = 0
    marker: str = field(default="")


@dataclass(frozen=True)
class _Plan:
    """One policy's features for one event type: what does not change from one event to
    the next (the hot path builds only the key values)."""

    feats: tuple[tuple[str, str, str, str], ...]  # name, event key, key base, ref
    ttl_ms: int  # the marker's life when every key is present


def key_value(event: Mapping[str, Any], key: str) -> str:
    return str(event.get(key) or "")


def bucket_ms(window_s: int) -> int:
    """A feature's bucket: 1/BUCKETS of its window, at least a millisecond."""
    return max(1, window_s * 1000 // BUCKETS)


def buckets(window_s: int) -> int:
    """Whole buckets in a window (BUCKETS, or more when the window is not a multiple)."""
    g = bucket_ms(window_s)
    return -(-window_s * 1000 // g)


class Velocity:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix  # a backtest counts in its own scratch space
        self._batch = Script(_BATCH)
        self._lane = Lane(redis)
        self._plans: dict[tuple[int, str], tuple[CompiledPolicy, _Plan]] = {}
        # Shape → its number in the script's header; numbers stay fixed (plans hold them)
        # until the registry is cleared between batches.
        self._shapes: dict[Shape, int] = {}

    def marker(self, event_id: str) -> str:
        # "!" never occurs in a policy name (a DNS label), so markers and counters never
        # share a key.
        return f"{self.prefix}!{event_id}"

    def prepare(self, policy: CompiledPolicy, event: Mapping[str, Any],
                record: bool = True) -> Call:
        """The counters ``event`` records into (when ``record``) and every feature to
        read. A feature whose key is empty on this event (no customer on a withdrawal,
        say) reads 0 and records nothing: an empty key would lump unrelated events
        together."""
        plan = self._plan(policy, str(event["event"]) if record else "")
        names: list[str] = []
        keys: list[str] = []
        refs: list[str] = []
        zeros: dict[str, int] = {}
        ttl = plan.ttl_ms
        for name, key, base, ref in plan.feats:
            kv = event.get(key)
            if not kv:
                zeros[name] = 0
                if ref[0] != "-":
                    ttl = -1  # a recording feature is missing: recompute below
                continue
            names.append(name)
            keys.append(base + str(kv))
            refs.append(ref)
        if ttl < 0:  # rare (an event without customer or IP): the longest present one
            ttl = max((self._ttl_of(policy, n) for n, r in zip(names, refs, strict=True)
                       if r[0] != "-"), default=0)
        return Call(names, keys, refs, zeros, ttl, int(event["ts"]),
                    int(event.get("amount") or 0), self.marker(event["eventId"]))

    def _ttl_of(self, policy: CompiledPolicy, name: str) -> int:
        return next(2 * f.window_s * 1000 for f in policy.features if f.name == name)

    def _plan(self, policy: CompiledPolicy, kind: str) -> _Plan:
        """The plan of ``policy`` for events of type ``kind`` ("": read only), computed
        once per compiled policy and event type."""
        hit = self._plans.get((id(policy), kind))
        if hit is not None and hit[0] is policy:
            return hit[1]
        feats = []
        ttl = 0
        for f in policy.features:
            shape = (bucket_ms(f.window_s), buckets(f.window_s),
                     "c" if f.aggregate == "count" else "s")
            n = self._shapes.get(shape)
            if n is None:
                n = self._shapes[shape] = len(self._shapes) + 1
            rec = bool(kind) and f.applies(kind)
            if rec:
                ttl = max(ttl, 2 * f.window_s * 1000)
            # Policy name in the key: two policies' features never share counters, so a
            # feature's meaning can change in one without touching the other.
            feats.append((f.name, f.key, f"{self.prefix}{policy.name}:{f.name}:",
                          str(n if rec else -n)))
        plan = _Plan(tuple(feats), ttl)
        self._plans[(id(policy), kind)] = (policy, plan)
        return plan

    @staticmethod
    def parse(call: Call, res: Any) -> dict[str, int]:
        out = dict(call.zeros)
        for i, name in enumerate(call.names):
            out[name] = int(res[i])
        return out

    async def features(self, policy: CompiledPolicy, event: Mapping[str, Any],
                       record: bool = True) -> dict[str, int]:
        call = self.prepare(policy, event, record)
        if not call.keys:
            return dict(call.zeros)
        return (await self.batch([([(policy, call)], [])]))[0][1][policy.name]

    async def batch(self, items: list[tuple[list[tuple[CompiledPolicy, Call]], list[str]]]
                    ) -> list[tuple[bool, dict[str, dict[str, int]]]]:
        """Every event of a batch in one script call. ``items`` holds per event its calls
        (one per policy, from :meth:`prepare`) and its snooze keys; returns per event
        whether a snooze is live and each policy's features."""
        if not items:
            return []
        keys: list[str] = []
        args: list[str] = []
        for calls, snoozes in items:
            if not calls:
                keys.append("")
                keys += snoozes
                args += ("0", "0", "0", "0", str(len(snoozes)))
                continue
            first = calls[0][1]
            if len(calls) == 1:
                vkeys, refs, ttl = first.keys, first.refs, first.ttl_ms
            else:
                vkeys = [k for _, c in calls for k in c.keys]
                refs = [r for _, c in calls for r in c.refs]
                # One marker per event for all its policies: the longest life any needs.
                ttl = max(c.ttl_ms for _, c in calls)
            keys.append(first.marker)
            keys += vkeys
            keys += snoozes
            args += (str(first.ts), str(ttl), str(first.amount), str(len(vkeys)),
                     str(len(snoozes)))
            args += refs
        head: list[str] = [str(len(self._shapes))]
        for shape in self._shapes:  # in number order (insertion order)
            head += (str(shape[0]), str(shape[1]), shape[2])
        res = (await self._lane.scripts([(self._batch, self._batch.command(keys, head + args))
                                         ]))[0]
        if len(self._shapes) > _MAX_SHAPES:  # between batches: no prepared call holds one
            self._shapes.clear()
            self._plans.clear()
        out = []
        i = 0
        for calls, _ in items:
            snoozed = res[i] == 1
            i += 1
            feats: dict[str, dict[str, int]] = {}
            for pol, c in calls:
                n = len(c.keys)
                out_f = dict(c.zeros)
                for name, x in zip(c.names, res[i:i + n], strict=True):
                    out_f[name] = int(x)
                feats[pol.name] = out_f
                i += n
            out.append((snoozed, feats))
        return out
