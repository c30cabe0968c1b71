"""Velocity counters shared by every replica of the risk worker, in Redis.

One sorted set per (feature, key value): member ``<event_id>|<amount>``, score the event's
time in ms. Recording and reading is one Lua script per event, so it is atomic across
replicas and idempotent: a redelivered event re-adds the same member, which changes
nothing. Entries older than the window are removed and the key expires one window after
its newest event, so memory follows traffic. Nothing is capped: a counter that grows
past ``LARGE`` is reported on a metric (``kameng_risk_velocity_large_total``) rather than
silently truncated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter

from .policy import CompiledPolicy

PREFIX = "kameng:risk:v:"
LARGE = 100_000

# KEYS: one sorted set per feature. ARGV: member, score_ms, then per key: window_ms,
# aggregate ("count"|"sum"), record ("1"|"0"). Returns per key: value, cardinality.
_SCRIPT = """
local member = ARGV[1]
local now = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  local window = tonumber(ARGV[base + 1])
  local agg = ARGV[base + 2]
  if ARGV[base + 3] == '1' then
    redis.call('ZADD', key, now, member)
    local expire_at = now + window
    local ttl = redis.call('PTTL', key)
    local t = redis.call('TIME')
    local wall = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    -- Old events (backfills) must not shorten the life of a counter.
    local want = math.max(expire_at - wall, window)
    if ttl < want then redis.call('PEXPIRE', key, want) end
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - window * 2))
  local value = 0
  if agg == 'count' then
    value = redis.call('ZCOUNT', key, '(' .. (now - window), now)
  else
    local members = redis.call('ZRANGEBYSCORE', key, '(' .. (now - window), now)
    for _, m in ipairs(members) do
      value = value + tonumber(string.match(m, '|(%d+)$') or '0')
    end
  end
  out[#out + 1] = tostring(value)
  out[#out + 1] = redis.call('ZCARD', key)
end
return out
"""


# The same work for a whole batch in ONE script call (the worker's hot path: a script call
# per event and policy cost more in redis-py packing and parsing than the counting itself).
# KEYS: per event, its velocity keys (every policy's, in order) then its snooze keys.
# ARGV: per event: member, score_ms, number of velocity keys, number of snooze keys, then
# per velocity key: window_ms, aggregate, record. Events run in order, so each sees the
# ones before it, exactly as separate calls would. Returns per event: 1 when a snooze
# key exists (else 0), then per velocity key: value, cardinality.
_BATCH = """
local out = {}
local k, a = 1, 1
local t = redis.call('TIME')
local wall = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
while a <= #ARGV do
  local member = ARGV[a]
  local now = tonumber(ARGV[a + 1])
  local nkeys = tonumber(ARGV[a + 2])
  local nsnooze = tonumber(ARGV[a + 3])
  a = a + 4
  local snoozed = 0
  for j = 0, nsnooze - 1 do
    if redis.call('EXISTS', KEYS[k + nkeys + j]) == 1 then snoozed = 1 end
  end
  out[#out + 1] = snoozed
  for j = 0, nkeys - 1 do
    local key = KEYS[k + j]
    local window = tonumber(ARGV[a])
    local agg = ARGV[a + 1]
    if ARGV[a + 2] == '1' then
      redis.call('ZADD', key, now, member)
      -- GT: only ever lengthens the life of a counter (old events, backfills, must not
      -- shorten it); one call instead of PTTL + PEXPIRE.
      redis.call('PEXPIRE', key, math.max(now + window - wall, window), 'GT')
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - window * 2))
    end
    a = a + 3
    local value, n = 0, 0
    if agg == 'count' then
      value = redis.call('ZCOUNT', key, '(' .. (now - window), now)
      n = value
    else
      local members = redis.call('ZRANGEBYSCORE', key, '(' .. (now - window), now)
      for _, m in ipairs(members) do
        value = value + tonumber(string.match(m, '|(%d+)$') or '0')
      end
      n = #members
    end
    -- The events in the window stand for the counter's size (trimmed to two windows):
    -- a ZCARD per key per event cost a sixth of the script.
    out[#out + 1] = tostring(value)
    out[#out + 1] = n
  end
  k = k + nkeys + nsnooze
end
return out
"""


@dataclass
class Call:
    names: list[str]
    args: list[Any]
    keys: list[str]
    zeros: dict[str, int]


LARGE_COUNTERS = Counter("kameng_risk_velocity_large_total",
                         f"Velocity reads over a counter holding more than {LARGE} events "
                         "(never capped: this says a window or key is too coarse).")


def key_value(event: Mapping[str, Any], key: str) -> str:
    return str(event.get(key) or "")


class Velocity:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix  # a backtest counts in its own scratch space
        self._script = redis.register_script(_SCRIPT)
        self._batch = redis.register_script(_BATCH)
        self.large = 0  # counters seen above LARGE (exported by the worker)

    def prepare(self, policy: CompiledPolicy, event: Mapping[str, Any],
                record: bool = True) -> Call:
        """The script call that records ``event`` in each feature it counts for and reads
        every feature. A feature whose key is empty on this event (no customer on a
        withdrawal, say) reads 0 and records nothing: an empty key would lump unrelated
        events together."""
        call = Call([], [f"{event['eventId']}|{int(event.get('amount') or 0)}",
                         int(event["ts"])], [], {})
        for f in policy.features:
            kv = key_value(event, f.key)
            if not kv:
                call.zeros[f.name] = 0
                continue
            call.names.append(f.name)
            # Policy name in the key: two policies' features never share counters, so a
            # feature's meaning can change in one without touching the other.
            call.keys.append(f"{self.prefix}{policy.name}:{f.name}:{kv}")
            call.args += [f.window_s * 1000, f.aggregate,
                          "1" if record and f.applies(str(event["event"])) else "0"]
        return call

    async def queue(self, call: Call, pipe: Any) -> bool:
        """Queue the call on a pipeline; False when there is nothing to ask Redis."""
        if not call.keys:
            return False
        # Awaiting a script call on a pipeline only queues it (and loads the script).
        await self._script(keys=call.keys, args=call.args, client=pipe)
        return True

    def parse(self, call: Call, res: Any) -> dict[str, int]:
        out = dict(call.zeros)
        for i, name in enumerate(call.names):
            out[name] = int(res[2 * i])
            if int(res[2 * i + 1]) > LARGE:
                self.large += 1
                LARGE_COUNTERS.inc()
        return out

    async def features(self, policy: CompiledPolicy, event: Mapping[str, Any],
                       record: bool = True) -> dict[str, int]:
        call = self.prepare(policy, event, record)
        if not call.keys:
            return dict(call.zeros)
        return self.parse(call, await self._script(keys=call.keys, args=call.args))

    async def batch(self, items: list[tuple[list[tuple[CompiledPolicy, Call]], list[str]]]
                    ) -> list[tuple[bool, dict[str, dict[str, int]]]]:
        """Every event of a batch in one script call. ``items`` holds per event its calls
        (one per policy, from :meth:`prepare`) and its snooze keys; returns per event
        whether a snooze is live and each policy's features."""
        keys: list[str] = []
        args: list[Any] = []
        for calls, snoozes in items:
            vkeys = [k for _, c in calls for k in c.keys]
            member, ts = calls[0][1].args[:2] if calls else ("", 0)
            keys += vkeys + snoozes
            args += [member, ts, len(vkeys), len(snoozes)]
            for _, c in calls:
                args += c.args[2:]
        res = await self._batch(keys=keys, args=args) if keys else \
            [0] * len(items)
        out = []
        i = 0
        for calls, _ in items:
            snoozed = bool(int(res[i]))
            i += 1
            feats: dict[str, dict[str, int]] = {}
            for pol, c in calls:
                n = len(c.keys)
                feats[pol.name] = self.parse(c, res[i:i + 2 * n])
                i += 2 * n
            out.append((snoozed, feats))
        return out
