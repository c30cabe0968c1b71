"""Velocity counters shared by every replica of the risk worker, in Redis.

ONE hash per (policy, key, key value) — ``<prefix><policy>/<key>:<value>``, say every
feature of the default policy keyed on one customer — holding, per feature ``f``, time
buckets of 1/60 of its window (``BUCKETS``): field ``f#<bucket number>`` → the count or
the sum of amounts in that bucket, ``f#hi`` → the newest bucket seen, ``f#t`` → the
running total of the window ending at ``hi``. An event reads every feature of a hash with
ONE ``HMGET`` and records with ONE ``HSET``; reading the window at ``hi`` is the running
total, kept up to date by subtracting each bucket once as it leaves the window. So the
cost per event is two calls per key (customer, IP, ...), whatever the traffic and however
many features share the key. (A hash per feature cost three calls per feature. Redis's
time per event came out the same, since its Lua work per feature dominates, but the
worker now builds and sends two keys per event instead of seven.)

Granularity: the window is measured in whole buckets. An event counts from the moment it
happens until between ``window − window/60`` and ``window`` later (a 10-minute feature
forgets an event 590 to 600 seconds after it). Nothing is capped silently: counts and sums
are exact integers up to 2^53 (9×10^15 fen in one window of one key), never rounded. An
event whose amount alone reaches 2^53 fails on every delivery and is dead-lettered; a
window total reaching it fails the batch that gets there (that event's redelivery then
reads without recording, as any redelivery of a recorded event does). A counter's size
is bounded by its buckets (two windows are kept so that late events, read at their own
time, still see the window before them); a hash lives until its longest-lived feature's
newest bucket is two windows old.

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

# One hash (the features of one policy sharing one key value) over one event: read every
# feature, record (when asked) and return each feature's window ending at the event's
# bucket. Shared by the per-event path (backtests) and the worker's batches.
# A group ``grp`` is the list of the hash's features: {g = bucket ms, w = buckets,
# sum = aggregate is a sum, p = field prefix "<name>#", hi and t = its two fixed field
# names, rec = recorded for this event}, and ``grp.fields`` the HMGET field list.
_HASH = """
-- Integers as exact decimal strings (a Lua number handed to Redis as an argument could
-- be formatted with an exponent).
local function d(x) return string.format('%d', x) end
-- Lua numbers are doubles: exact below 2^53. Past that the script fails (an error reply
-- fails the batch, which is then retried event by event): never a rounded count.
local EXACT = 9007199254740992
local function exact(x)
  if x >= EXACT or x <= -EXACT then error('velocity counter past 2^53') end
  return x
end
local function hash(key, now, grp, amount, rec, wall, out)
  -- The group's HMGET fields are kept with it (hi and t fixed, the event's bucket set
  -- here): no table and no field name built per event but the bucket's.
  local fields, bs, bn = grp.fields, {}, {}
  for i, f in ipairs(grp) do
    local b = math.floor(now / f.g)
    local s = bn[b]  -- features with the same bucket size share the number's string
    if s == nil then
      s = d(b)
      bn[b] = s
    end
    bs[i] = b
    fields[3 * i] = f.p .. s
  end
  -- One read of every feature's newest bucket, running total and the event's bucket.
  local st = redis.call('HMGET', key, unpack(fields))
  local set = {}  -- field/value pairs, written by ONE HSET at the end
  local expire = 0  -- the life the hash needs (ms from now) when a feature starts or moves
  for i, f in ipairs(grp) do
    local b, w, g, p = bs[i], f.w, f.g, f.p
    local v = (rec and f.rec) and (f.sum and amount or 1) or 0
    local hi, total, cur = tonumber(st[3 * i - 2]), tonumber(st[3 * i - 1]), st[3 * i]
    if hi ~= nil and b - hi >= 2 * w then
      -- Everything kept is older than two windows: no read at or after b can see it.
      local old = {}
      for x = hi - 2 * w + 1, hi do old[#old + 1] = p .. d(x) end
      old[#old + 1] = f.hi
      old[#old + 1] = f.t
      redis.call('HDEL', key, unpack(old))
      hi, cur = nil, nil
    end
    if hi == nil then
      if v ~= 0 then
        local sv = d(exact(v))
        set[#set + 1] = fields[3 * i]; set[#set + 1] = sv
        set[#set + 1] = f.hi; set[#set + 1] = d(b)
        set[#set + 1] = f.t; set[#set + 1] = sv
        expire = math.max(expire, (b + 2 * w) * g - wall, w * g)
      elseif rec and f.rec then
        -- A sum of 0 (an amount of 0) still starts the feature's buckets.
        set[#set + 1] = f.hi; set[#set + 1] = d(b)
        set[#set + 1] = f.t; set[#set + 1] = '0'
        expire = math.max(expire, (b + 2 * w) * g - wall, w * g)
      end
      out[#out + 1] = v
    else
      if b > hi then
        -- The window moves on: buckets (hi - w, min(hi, b - w)] leave the running total,
        -- and buckets older than two windows are dropped. Each bucket pays this once.
        -- Bucket b is empty (events are recorded at or below the newest bucket).
        local leave = {}
        for x = hi - w + 1, math.min(hi, b - w) do leave[#leave + 1] = p .. d(x) end
        if #leave > 0 then
          for _, x in ipairs(redis.call('HMGET', key, unpack(leave))) do
            if x then total = total - tonumber(x) end
          end
        end
        local gone = {}
        for x = math.max(hi - 2 * w + 1, 0), b - 2 * w do gone[#gone + 1] = p .. d(x) end
        if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
        set[#set + 1] = f.hi; set[#set + 1] = d(b)
        set[#set + 1] = f.t; set[#set + 1] = d(exact(total + v))
        if v ~= 0 then set[#set + 1] = fields[3 * i]; set[#set + 1] = d(exact(v)) end
        expire = math.max(expire, (b + 2 * w) * g - wall, w * g)
        out[#out + 1] = total + v
      elseif b == hi then
        if v ~= 0 then
          total = exact(total + v)
          set[#set + 1] = fields[3 * i]; set[#set + 1] = d(exact((tonumber(cur) or 0) + v))
          set[#set + 1] = f.t; set[#set + 1] = d(total)
        end
        out[#out + 1] = total
      elseif b <= hi - 2 * w then
        out[#out + 1] = 0  -- older than anything kept: too late to count anywhere
      else
        -- A late event (older than the newest): recorded in its bucket while it is kept,
        -- and read as the window ending at its own bucket.
        if v ~= 0 then
          set[#set + 1] = fields[3 * i]; set[#set + 1] = d(exact((tonumber(cur) or 0) + v))
          if b > hi - w then
            set[#set + 1] = f.t; set[#set + 1] = d(exact(total + v))
          end
        end
        local want = {}
        for x = math.max(b - w + 1, hi - 2 * w + 1), b do want[#want + 1] = p .. d(x) end
        local s = v  -- the read sees the values before this call's HSET, plus this event
        for _, x in ipairs(redis.call('HMGET', key, unpack(want))) do
          if x then s = s + tonumber(x) end
        end
        out[#out + 1] = exact(s)
      end
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  if expire > 0 then
    -- Set when the hash has no TTL yet (new), else only ever extended (GT never sets a
    -- TTL on a key that has none, NX never changes one).
    redis.call('PEXPIRE', key, d(expire), 'NX')
    redis.call('PEXPIRE', key, d(expire), 'GT')
  end
end
local t = redis.call('TIME')
local wall = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# A whole batch in ONE script call (the worker's hot path; a backtest sends one event a
# call). Events run in order, so each sees the ones before it, exactly as separate calls
# would. Arguments are compact (every argument costs packing in Python and parsing in
# Redis): the groups of features used in the batch once a call, then per event one group
# reference per hash.
# KEYS: per event: its marker, its hashes (every policy's, in order), its snooze keys.
# ARGV: number of groups G, then per group: number of features F, then per feature:
# bucket_ms, buckets, aggregate ("c"|"s"), field prefix, recorded for this event ("1"|"0");
# then per event: ts_ms, marker ttl_ms (0: records nothing), amount, number of hashes,
# number of snooze keys, then per hash its group's number.
# Returns per event: 1 when a snooze key exists (else 0), then per hash, per feature of
# its group, the feature's value (an integer).
_BATCH = _HASH + """
local groups = {}
local a = 2
for i = 1, tonumber(ARGV[1]) do
  local grp = {}
  for j = 1, tonumber(ARGV[a]) do
    local o = a + 1 + 5 * (j - 1)
    local p = ARGV[o + 3]
    grp[j] = {g = tonumber(ARGV[o]), w = tonumber(ARGV[o + 1]), sum = ARGV[o + 2] == 's',
              p = p, hi = p .. 'hi', t = p .. 't', rec = ARGV[o + 4] == '1'}
  end
  a = a + 1 + 5 * #grp
  local fields = {}
  for j, f in ipairs(grp) do
    fields[3 * j - 2] = f.hi
    fields[3 * j - 1] = f.t
  end
  grp.fields = fields
  groups[i] = grp
end
local out = {}
local k = 1
while a <= #ARGV do
  local now = tonumber(ARGV[a])
  local ttl = ARGV[a + 1]
  local amount = tonumber(ARGV[a + 2])
  -- Before the once-only marker: an amount no counter can hold exactly fails this
  -- event on every delivery (dead-lettered), never recorded as read-only on a retry.
  if amount >= EXACT then error('velocity amount past 2^53') end
  local nkeys = tonumber(ARGV[a + 3])
  local nsnooze = tonumber(ARGV[a + 4])
  a = a + 5
  local snoozed = 0
  if nsnooze > 0 then
    -- One call for all of them (EXISTS counts the keys that exist).
    local sk = {}
    for j = 1, nsnooze do sk[j] = KEYS[k + nkeys + j] end
    if redis.call('EXISTS', unpack(sk)) > 0 then snoozed = 1 end
  end
  out[#out + 1] = snoozed
  local rec = ttl ~= '0' and redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl) and true
  for j = 1, nkeys do
    hash(KEYS[k + j], now, groups[tonumber(ARGV[a])], amount, rec, wall, out)
    a = a + 1
  end
  k = k + 1 + nkeys + nsnooze
end
return out
"""


class _Group:
    """The features of one policy sharing one key, for one event type: the script's
    group header (sent once per batch that uses it). Compared by identity (a plan keeps
    one per (policy, event type, key))."""

    __slots__ = ("header", "names", "ttl_ms")

    def __init__(self, header: list[str], names: tuple[str, ...], ttl_ms: int) -> None:
        self.header = header
        self.names = names
        self.ttl_ms = ttl_ms  # the marker's life its recording features need (0: none)


@dataclass
class Call:
    """One policy's features over one event: what to ask Redis."""

    names: list[str]  # in the order the script returns them
    keys: list[str]  # the hashes
    groups: list[_Group]  # per hash: its features
    zeros: dict[str, int]
    ttl_ms: int = 0  # the event marker's life for this policy (0: records nothing)
    ts: int = 0
    amount: int = 0
    marker: str = field(default="")


@dataclass(frozen=True)
class _Plan:
    """One policy's features for one event type (computed once per compiled policy and
    event type: the hot path builds only the key values)."""

    groups: tuple[tuple[str, str, _Group], ...]  # event key, hash key base, group
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

    def marker(self, event_id: str) -> str:
        # "!" never occurs in a policy name (a DNS label), so markers and counters never
        # share a key.
        return f"{self.prefix}!{event_id}"

    def key(self, policy: str, key: str, value: str) -> str:
        """The hash of ``policy``'s features keyed on ``key`` = ``value``. Policy name in
        the key: two policies' features never share counters, so a feature's meaning can
        change in one without touching the other ("/" never occurs in a policy name)."""
        return f"{self.prefix}{policy}/{key}:{value}"

    def prepare(self, policy: CompiledPolicy, event: Mapping[str, Any],
                record: bool = True) -> Call:
        """The counters ``event`` records into (when ``record``) and every feature to
        read. A feature whose key is empty on this event (no customer on a withdrawal,
        say) reads 0 and records nothing: an empty key would lump unrelated events
        together."""
        plan = self._plan(policy, str(event["event"]) if record else "")
        names: list[str] = []
        keys: list[str] = []
        groups: list[_Group] = []
        zeros: dict[str, int] = {}
        ttl = plan.ttl_ms
        missing = False
        for key, base, group in plan.groups:
            kv = event.get(key)
            if not kv:
                zeros.update(dict.fromkeys(group.names, 0))
                missing = missing or group.ttl_ms > 0
                continue
            keys.append(base + str(kv))
            groups.append(group)
            names += group.names
        if missing:  # rare (an event without customer or IP): the longest present one
            ttl = max((g.ttl_ms for g in groups), default=0)
        return Call(names, keys, groups, zeros, ttl, int(event["ts"]),
                    int(event.get("amount") or 0), self.marker(event["eventId"]))

    def _plan(self, policy: CompiledPolicy, kind: str) -> _Plan:
        """The plan of ``policy`` for events of type ``kind`` ("": read only)."""
        hit = self._plans.get((id(policy), kind))
        if hit is not None and hit[0] is policy:
            return hit[1]
        by_key: dict[str, list[Any]] = {}
        for f in policy.features:
            by_key.setdefault(f.key, []).append(f)
        groups = []
        for key, feats in by_key.items():
            header = [str(len(feats))]
            ttl = 0
            for f in feats:
                rec = bool(kind) and f.applies(kind)
                if rec:
                    ttl = max(ttl, 2 * f.window_s * 1000)
                header += (str(bucket_ms(f.window_s)), str(buckets(f.window_s)),
                           "c" if f.aggregate == "count" else "s", f"{f.name}#",
                           "1" if rec else "0")
            groups.append((key, self.key(policy.name, key, ""),
                           _Group(header, tuple(f.name for f in feats), ttl)))
        plan = _Plan(tuple(groups), max((g.ttl_ms for _, _, g in groups), default=0))
        if len(self._plans) > 1024:  # policies are few; recompiled ones replace them
            self._plans.clear()
        self._plans[(id(policy), kind)] = (policy, plan)
        return plan

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
        numbers: dict[_Group, str] = {}  # the batch's groups, numbered from 1
        head: list[str] = []
        for calls, snoozes in items:
            if not calls:
                keys.append("")
                keys += snoozes
                args += ("0", "0", "0", "0", str(len(snoozes)))
                continue
            first = calls[0][1]
            if len(calls) == 1:
                hkeys, groups, ttl = first.keys, first.groups, first.ttl_ms
            else:
                hkeys = [k for _, c in calls for k in c.keys]
                groups = [g for _, c in calls for g in c.groups]
                # One marker per event for all its policies: the longest life any needs.
                ttl = max(c.ttl_ms for _, c in calls)
            keys.append(first.marker)
            keys += hkeys
            keys += snoozes
            args += (str(first.ts), str(ttl), str(first.amount), str(len(hkeys)),
                     str(len(snoozes)))
            for g in groups:
                n = numbers.get(g)
                if n is None:
                    n = numbers[g] = str(len(numbers) + 1)
                    head += g.header
                args.append(n)
        res = (await self._lane.scripts([(self._batch, self._batch.command(
            keys, [str(len(numbers)), *head, *args]))]))[0]
        out = []
        i = 0
        for calls, _ in items:
            snoozed = res[i] == 1
            i += 1
            feats: dict[str, dict[str, int]] = {}
            for pol, c in calls:
                n = len(c.names)
                got = dict(c.zeros)
                got.update(zip(c.names, res[i:i + n], strict=True))
                feats[pol.name] = got
                i += n
            out.append((snoozed, feats))
        return out
