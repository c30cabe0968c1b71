"""The risk worker: every order event through every applicable RiskPolicy.

Per event (a batch is handled event by event, in stream order):

1. velocity features are recorded and read (``velocity``: atomic, idempotent per event);
2. every rule of every policy applying to the site is evaluated; the strongest enforced
   action wins (block > freeze > review > allow); shadow hits and rules failing at run
   time are recorded, never acted on;
3. the outcome is written once per event id by one Lua script: the stored record
   (``kameng:risk:d:<event_id>``, kept ``RECORD_TTL``) and, when the action is not
   ``allow``, the :class:`~kameng.contracts.events.Decision` on ``kameng:decisions:<site>``
   and the hit log (``kameng:risk:hits``, the source of the review queue and backtests).
   The script is atomic, so a worker killed mid-batch leaves each event either fully
   decided or not at all; the stream entry is acknowledged only after, so a redelivered
   event finds its record and publishes nothing twice.

``allow`` publishes no decision: the shop delivers unless told otherwise, and a decision
stream carrying every allowed order would cost every shop a read per order for nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram

from kameng.contracts.events import Decision, OrderEvent, decisions_stream
from kameng.licensing.lifecycle import state_at

from ..streams import ConsumerConfig, Entry, StreamConsumer
from .escalation import Escalation
from .policy import CompiledPolicy, EscalationDef, Hit, Verdict, evaluate
from .review import snooze_keys_of
from .velocity import Velocity

log = logging.getLogger(__name__)

GROUP = "risk"
RECORD_PREFIX = "kameng:risk:d:"
HITS_STREAM = "kameng:risk:hits"
RECORD_TTL_S = 30 * 86400
HITS_MAXLEN = 1_000_000  # approximate; the review queue reads recent hits only

DECISIONS = Counter("kameng_risk_decisions_total", "Risk decisions by action.", ["action"])
# Bounded: rules are at most 64 per policy and policies are few (cluster objects).
RULE_HITS = Counter("kameng_risk_rule_hits_total", "Rule hits by policy, rule and mode.",
                    ["policy", "rule", "mode"])
RULE_ERRORS = Counter("kameng_risk_rule_errors_total", "Rules that failed at run time.",
                      ["policy", "rule"])
LATENCY = Histogram("kameng_risk_decision_seconds",
                    "From the event's stream entry to its decision being stored.",
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5))

# KEYS: record key, decisions stream, hits stream. ARGV: record json, ttl, publish flag,
# then decision field/value pairs count N and the pairs, then hit json.
_COMMIT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) == false then
  return 0
end
local n = tonumber(ARGV[4])
if ARGV[3] == '1' then
  local fields = {}
  for i = 1, n * 2 do fields[i] = ARGV[4 + i] end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
if ARGV[5 + n * 2] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', tonumber(ARGV[6 + n * 2]), '*',
             'record', ARGV[5 + n * 2])
end
return 1
"""


# Events that sell: blocked when the site's license does not let it sell at the event's
# time (Grace is read-only, Expired and Suspended are closed). Refunds and withdrawals
# pass: money going back to buyers, and payouts are held by settlement instead.
_SELLING_EVENTS = frozenset({"order.created", "order.paid", "order.delivered", "topup"})


def license_block(view: Mapping[str, Any], licence: Mapping[str, Any] | None) -> Hit | None:
    """A block when the License's life cycle (the one :func:`state_at`) says the site
    may not sell when the event happened; rules cannot allow it back."""
    terms = (licence or {}).get("terms")
    if terms is None or view["event"] not in _SELLING_EVENTS:
        return None
    lc = state_at(terms, datetime.fromtimestamp(view["ts"] / 1000, UTC))
    if lc.selling:
        return None
    return Hit("license", f"license-{lc.state.lower()}", "block", lc.message, False)


def blocked(hit: Hit, verdict: Verdict) -> Verdict:
    return Verdict("block", hit.rule, (hit, *verdict.hits))


def event_view(ev: OrderEvent, licence: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a rule sees as ``event`` (camelCase, amount in fen, ts in ms)."""
    lic = licence or {}
    return {
        "event": ev.event, "eventId": ev.event_id, "site": ev.site, "orderId": ev.order_id,
        "customer": ev.customer, "ip": ev.ip, "category": ev.category,
        "product": ev.product, "region": ev.region,
        "amount": ev.amount, "currency": ev.currency,
        "ts": int(ev.ts.timestamp() * 1000),
        "licenseCategories": list(lic.get("categories") or []),
        "licenseRegions": list(lic.get("regions") or []),
    }


@dataclass
class Policies:
    """The compiled policies in force and each site's licensed scope; refreshed by a
    loader (Kubernetes in production, a fixed list in tests)."""

    policies: list[CompiledPolicy] = field(default_factory=list)
    licences: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_site(self, site: str) -> list[CompiledPolicy]:
        return [p for p in self.policies if p.applies_to(site)]


def record_of(view: Mapping[str, Any], verdict: Verdict, decided_at: float) -> dict[str, Any]:
    return {
        "eventId": view["eventId"], "site": view["site"], "orderId": view["orderId"],
        "event": view["event"], "customer": view["customer"], "ip": view["ip"],
        "amount": view["amount"], "category": view["category"], "ts": view["ts"],
        "product": view["product"], "region": view["region"],
        "action": verdict.action, "rule": verdict.rule,
        "decidedAt": int(decided_at * 1000), "snoozed": verdict.snoozed,
        "hits": [{"policy": h.policy, "rule": h.rule, "action": h.action,
                  "reason": h.reason, "shadow": h.shadow, "error": h.error}
                 for h in verdict.hits],
    }


class RiskWorker:
    def __init__(self, redis: aioredis.Redis, policies: Policies,
                 config: ConsumerConfig | None = None,
                 clock: Callable[[], float] = time.time,
                 escalation: Escalation | None = None) -> None:
        self.redis = redis
        self.escalation = escalation
        self.policies = policies
        self.velocity = Velocity(redis)
        self._commit = redis.register_script(_COMMIT)
        self.clock = clock
        self.consumer = StreamConsumer(redis, config or ConsumerConfig(group=GROUP),
                                       self.handle)

    async def decide(self, ev: OrderEvent) -> tuple[dict[str, Any], Verdict]:
        view = event_view(ev, self.policies.licences.get(ev.site))
        pols = self.policies.for_site(ev.site)
        feats = {p.name: await self.velocity.features(p, view) for p in pols}
        verdict = evaluate(pols, view, feats)
        lic_hit = license_block(view, self.policies.licences.get(ev.site))
        return view, verdict if lic_hit is None else blocked(lic_hit, verdict)

    async def handle(self, entries: list[Entry]) -> None:
        """A batch in three Redis round trips: every velocity call pipelined in stream
        order (each is atomic and sees the ones before it), the rules in process, then
        every once-only commit pipelined. A malformed entry raises: the shared machinery
        retries entries one by one and dead-letters that one; it never decides anything."""
        events = [OrderEvent.from_fields(e.fields) for e in entries]
        views = [event_view(ev, self.policies.licences.get(ev.site)) for ev in events]
        plans = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for view in views:
                pols = self.policies.for_site(view["site"])
                calls = [(p, self.velocity.prepare(p, view)) for p in pols]
                plans.append([(p, c, await self.velocity.queue(c, pipe)) for p, c in calls])
                # Live snoozes of this event's customer or IP (0 when none).
                keys = snooze_keys_of(view)
                if keys:
                    pipe.exists(*keys)
                else:
                    pipe.echo("0")
            results = iter(await pipe.execute())
        verdicts = []
        for view, plan in zip(views, plans, strict=True):
            feats = {p.name: self.velocity.parse(c, next(results)) if queued
                     else dict(c.zeros) for p, c, queued in plan}
            verdict = evaluate([p for p, _, _ in plan], view, feats)
            lic_hit = license_block(view, self.policies.licences.get(view["site"]))
            if lic_hit is not None:
                verdict = blocked(lic_hit, verdict)
            if int(next(results)) and verdict.action != "allow" and lic_hit is None:
                # Snoozed entity: every hit is still stored, nothing is acted on.
                verdict = Verdict("allow", "", verdict.hits, snoozed=True)
            verdicts.append(verdict)
        now = self.clock()
        escalating = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for view, verdict in zip(views, verdicts, strict=True):
                await self._queue_commit(pipe, view, verdict, now)
                # Counted also on a redelivery: the counters are keyed by event id, so
                # counting again is harmless, and a crash between commit and here must
                # not lose the count.
                esc = await self._queue_escalation(pipe, view, verdict)
                escalating.append(esc)
            results = iter(await pipe.execute())
        for e, view, verdict, esc in zip(entries, views, verdicts, escalating, strict=True):
            if next(results):
                self._count(verdict, e.id, now)
            for name, esc_def in esc:
                assert self.escalation is not None
                await self.escalation.judge(name, view["site"], next(results), esc_def,
                                            self.policies.licences.get(view["site"]))

    async def _queue_escalation(self, pipe: Any, view: Mapping[str, Any],
                                verdict: Verdict) -> list[tuple[str, EscalationDef]]:
        """Count the event for every applicable policy with a siteEscalation (each over
        its own window); returns what was queued, in order."""
        if self.escalation is None:
            return []
        kinds = self.escalation.counts_for(view["event"], verdict.action)
        if kinds is None:
            return []
        out = []
        for pol in self.policies.for_site(view["site"]):
            if pol.escalation is not None:
                await self.escalation.queue(pipe, pol.name, view["site"], view["eventId"],
                                            view["ts"], pol.escalation, kinds)
                out.append((pol.name, pol.escalation))
        return out

    async def _queue_commit(self, pipe: Any, view: Mapping[str, Any], verdict: Verdict,
                      now: float) -> None:
        rec = json.dumps(record_of(view, verdict, now), separators=(",", ":"))
        publish = verdict.action != "allow"
        dec = Decision(order_id=view["orderId"], action=verdict.action,  # type: ignore[arg-type]
                       rule=verdict.rule, ts=datetime.fromtimestamp(now, UTC)).to_fields()
        pairs = [x for kv in dec.items() for x in kv]
        await self._commit(
            keys=[RECORD_PREFIX + view["eventId"], decisions_stream(view["site"]),
                  HITS_STREAM],
            args=[rec, RECORD_TTL_S, "1" if publish else "0", len(dec), *pairs,
                  rec if verdict.hits else "", HITS_MAXLEN], client=pipe)

    def _count(self, verdict: Verdict, entry_id: str, now: float) -> None:
        DECISIONS.labels(verdict.action).inc()
        for h in verdict.hits:
            if h.error:
                RULE_ERRORS.labels(h.policy, h.rule).inc()
            else:
                RULE_HITS.labels(h.policy, h.rule, "shadow" if h.shadow else "enforce").inc()
        if entry_id:
            ms = int(entry_id.split("-", 1)[0])
            LATENCY.observe(max(0.0, now - ms / 1000))

    async def commit(self, view: Mapping[str, Any], verdict: Verdict,
                     entry_id: str = "") -> bool:
        """Store one outcome once (and publish its decision); False on a redelivery."""
        now = self.clock()
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._queue_commit(pipe, view, verdict, now)
            (done,) = await pipe.execute()
        if done:
            self._count(verdict, entry_id, now)
        return bool(done)

    async def run(self, stop: asyncio.Event) -> None:
        await self.consumer.run(stop)
