"""Site escalation: a site whose fraud rate crosses ``raiseAt`` is suspended with a hold.

Fraud rate = (orders blocked by risk + charge-backs, i.e. ``order.disputed``) / paid orders,
over the policy's window, counted only from ``minOrders`` paid orders on. Counters are
sorted sets keyed by event id, so a redelivered event counts once.

Crossing ``raiseAt`` puts the ``hold.kameng.io/risk`` annotation on the site's License —
metadata beside the spec Git owns, never the spec, so Argo CD shows no drift — plus one
Kubernetes Event and a metric. Only a person lifts it (``kubectl kameng release``). The
hysteresis: after raising, the site is *disarmed* and is raised again only once its rate
has fallen below ``liftAt`` and then crossed ``raiseAt`` anew, so a person's release is not
undone by the very orders that caused the hold, and nothing flaps. The disarm key doubles
as the lock between replicas: the one whose ``SET NX`` wins places the hold and posts the
Event; the others do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from kameng.api.common import API_VERSION, format_time
from kameng.api.holds import Hold, holds_of
from kameng.api.resources import LICENSE
from kameng.kube import events
from kameng.kube.client import Kube, path_for

from .policy import EscalationDef
from .resp import Script

log = logging.getLogger(__name__)

PREFIX = "kameng:risk:esc:"
ESCALATIONS = Counter("kameng_risk_site_escalations_total",
                      "Sites suspended by the risk worker.", ["site"])
FRAUD_RATE = Gauge("kameng_risk_site_fraud_rate", "Fraud rate over the escalation window.",
                   ["site"])

# A batch's counting in ONE script call (one call per event cost the worker a tenth of its
# time in redis-py alone), re-arming in the same call every site whose rate fell below
# ``liftAt`` (a DEL a batch after it cost the worker's publishing chain a third of its time).
# KEYS: per (site, policy) pair: orders zset, fraud zset, the site's disarm key. ARGV:
# number of pairs P, then per pair its window_ms and liftAt, then per event: pair index
# (1-based), now_ms, member, is_order, is_fraud. Each pair is trimmed at the time of its
# last event, then counted. Returns per pair: orders, fraud.
_BATCH = """
local p = tonumber(ARGV[1])
local now = {}
local a = 2 + 2 * p
while a <= #ARGV do
  local i = tonumber(ARGV[a])
  local t = tonumber(ARGV[a + 1])
  if ARGV[a + 3] == '1' then redis.call('ZADD', KEYS[3 * i - 2], t, ARGV[a + 2]) end
  if ARGV[a + 4] == '1' then redis.call('ZADD', KEYS[3 * i - 1], t, ARGV[a + 2]) end
  now[i] = t
  a = a + 5
end
local out = {}
for i = 1, p do
  local window = tonumber(ARGV[2 * i])
  local n = {}
  for j = 3 * i - 2, 3 * i - 1 do
    redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', '(' .. string.format('%d', now[i] - window))
    redis.call('PEXPIRE', KEYS[j], window * 2)
    n[#n + 1] = redis.call('ZCARD', KEYS[j])
    out[#out + 1] = n[#n]
  end
  -- The rate exactly as judge() computes it (IEEE doubles on both sides).
  local rate = 0
  if n[1] > 0 then rate = n[2] / n[1] end
  if rate < tonumber(ARGV[2 * i + 1]) then redis.call('DEL', KEYS[3 * i]) end
end
return out
"""


def disarm_key(site: str) -> str:
    """One per site, whichever policy raised: one hold, one Event."""
    return f"{PREFIX}{site}:disarmed"


def _human(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


class Escalation:
    def __init__(self, redis: aioredis.Redis, kube: Kube | None) -> None:
        self.redis = redis
        self.kube = kube
        self._batch = Script(_BATCH)

    @staticmethod
    def counts_for(event_type: str, action: str) -> tuple[bool, bool] | None:
        is_order = event_type == "order.paid"
        is_fraud = action == "block" or event_type == "order.disputed"
        return (is_order, is_fraud) if is_order or is_fraud else None

    def batch_command(self, items: list[tuple[str, str, str, int, EscalationDef,
                                              tuple[bool, bool]]]
                      ) -> tuple[tuple[Script, bytes] | None, list[tuple[str, str, EscalationDef]]]:
        """The counting of a batch's events — ``(policy, site, event_id, ts_ms, esc,
        kinds)`` in stream order — as ONE script call, for the worker's commit round trip
        (:class:`~.resp.Lane`); returns it with the (policy, site, esc) pairs whose counts
        (orders, fraud) its result holds, in order. Counters are per policy: each policy's
        thresholds apply over its own window."""
        pairs: dict[tuple[str, str], str] = {}
        defs: list[tuple[str, str, EscalationDef]] = []
        keys: list[str] = []
        ev_args: list[str] = []
        for policy, site, event_id, ts_ms, esc, kinds in items:
            i = pairs.get((policy, site))
            if i is None:
                i = pairs[(policy, site)] = str(len(pairs) + 1)
                base = f"{PREFIX}{site}:{policy}"
                keys += [f"{base}:orders", f"{base}:fraud", disarm_key(site)]
                defs.append((policy, site, esc))
            ev_args += (i, str(ts_ms), event_id, "1" if kinds[0] else "0",
                        "1" if kinds[1] else "0")
        if not defs:
            return None, []
        # repr: the shortest text that reads back as the same double in Lua.
        args = [str(len(defs)), *[x for d in defs for x in (str(d[2].window_s * 1000),
                                                           repr(float(d[2].lift_at)))],
                *ev_args]
        return (self._batch, self._batch.command(keys, args)), defs

    async def judge(self, policy: str, site: str, counts: Any, esc: EscalationDef,
                    licence: Mapping[str, Any] | None) -> str:
        """Given the window's (orders, fraud): raise the hold when due. Returns "raised"
        when this call suspended the site."""
        orders, fraud = int(counts[0]), int(counts[1])
        rate = fraud / orders if orders else 0.0
        FRAUD_RATE.labels(site).set(rate)
        if rate < esc.lift_at:
            return ""  # re-armed by the counting script itself
        if orders < esc.min_orders or rate < esc.raise_at:
            return ""
        if licence is None or self.kube is None:
            return ""
        if any(h.kind == "risk" for h in holds_of(licence.get("annotations"))):
            return ""
        if not await self.redis.set(disarm_key(site), "1", nx=True):
            return ""
        await self.raise_hold(site, licence, rate, fraud, orders, esc)
        return "raised"

    async def raise_hold(self, site: str, licence: Mapping[str, Any], rate: float,
                         fraud: int, orders: int, esc: EscalationDef) -> None:
        assert self.kube is not None
        reason = (f"fraud rate {rate:.1%} ({fraud} blocked or disputed of {orders} orders "
                  f"in the last {_human(esc.window_s)}) crossed {esc.raise_at:.1%}")
        hold = Hold("risk", reason, format_time(datetime.now(UTC)), "risk-worker")
        name = licence["name"]
        # metadata.annotations only: the spec and every Git-owned field stay untouched.
        await self.kube.merge_patch(path_for(API_VERSION, LICENSE.kind, name),
                                    {"metadata": {"annotations": {hold.annotation:
                                                                  hold.to_value()}}},
                                    kind=LICENSE.kind)
        obj = dict(licence.get("object") or {"apiVersion": API_VERSION, "kind": LICENSE.kind,
                                              "metadata": {"name": name}})
        obj.setdefault("kind", LICENSE.kind)
        await events.post(self.kube, obj, "Warning", "RiskHoldRaised",
                          f"site {site} suspended by risk: {reason}; lift with "
                          f"`kubectl kameng release {site}`")
        ESCALATIONS.labels(site).inc()
        log.warning("site suspended by risk escalation", extra={"site": site, "rate": rate})
