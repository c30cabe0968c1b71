"""The risk worker: every order event through every applicable RiskPolicy.

Per event (a batch is handled event by event, in stream order):

1. velocity features are recorded and read (``velocity``: atomic, idempotent per event);
2. every rule of every policy applying to the site is evaluated; the strongest enforced
   action wins (block > freeze > review > allow); shadow hits and rules failing at run
   time are recorded, never acted on;
3. every outcome and rule hit (policy generation, mode, feature values) is stored in HQ's
   PostgreSQL by one idempotent statement per batch (``store``);
4. one script call per batch publishes, once per event id, the
   :class:`~kameng.contracts.events.Decision` on ``kameng:decisions:<site>`` when the
   action is not ``allow`` (marker ``kameng:risk:d:<event_id>``, set with the XADD
   atomically; an allowed event publishes nothing and sets no marker: its stored outcome
   tells a redelivery that it was decided). The stream entry is acknowledged only
   after: a worker killed mid-batch leaves each event stored or not, published or not;
   the redelivery stores nothing twice (primary keys), publishes what was stored the
   first time, and only if it was not published yet.

``allow`` publishes no decision: the shop delivers unless told otherwise, and a decision
stream carrying every allowed order would cost every shop a read per order for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram

from kameng.contracts.events import Decision, OrderEvent, decisions_stream
from kameng.licensing.lifecycle import state_at

from ..streams import RISK_GROUP, ConsumerConfig, Entry, StreamConsumer
from .escalation import Escalation
from .policy import CompiledPolicy, EscalationDef, Hit, Verdict, evaluate
from .resp import Lane, Script
from .review import snooze_keys_of
from .store import Outcome, RiskStore
from .velocity import Call, Velocity

log = logging.getLogger(__name__)

GROUP = RISK_GROUP
# Once-only marker of a decided event (value: its action). The outcome itself is stored
# in HQ's PostgreSQL (``store``); Redis keeps only what the hot path needs: this marker
# makes publishing a decision once-only, and it must outlive any redelivery (claims
# happen within seconds; dead letters are re-driven by a person within days).
RECORD_PREFIX = "kameng:risk:d:"
RECORD_TTL_S = 7 * 86400
_TTL = str(RECORD_TTL_S)

DECISIONS = Counter("kameng_risk_decisions_total", "Risk decisions by action.", ["action"])
# Bounded: rules are at most 64 per policy and policies are few (cluster objects).
RULE_HITS = Counter("kameng_risk_rule_hits_total", "Rule hits by policy, rule and mode.",
                    ["policy", "rule", "mode"])
RULE_ERRORS = Counter("kameng_risk_rule_errors_total", "Rules that failed at run time.",
                      ["policy", "rule"])
LATENCY = Histogram("kameng_risk_decision_seconds",
                    "From the event's stream entry to its decision being stored.",
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5))

# A batch's once-only markers and decisions in one script call.
# KEYS: per event: marker key, decisions stream. ARGV: ttl, number of templates T, then
# per template: action, number of decision fields N (0: nothing published, i.e. allow),
# then N field/value pairs (the contract's Decision, built once per batch; the value of
# "order_id" is the event's own); then per event: template number, order id.
# Returns per event 1 when this call decided it (0: an earlier delivery did).
_COMMIT = """
local ttl = tonumber(ARGV[1])
local tpl = {}
local a = 3
for i = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a + 1])
  local fields, oid = {}, 0
  for j = 1, 2 * n do
    fields[j] = ARGV[a + 1 + j]
    if j % 2 == 1 and fields[j] == 'order_id' then oid = j + 1 end
  end
  tpl[i] = {ARGV[a], fields, oid}
  a = a + 2 + 2 * n
end
local out = {}
for i = 1, #KEYS, 2 do
  local t = tpl[tonumber(ARGV[a])]
  local order = ARGV[a + 1]
  a = a + 2
  if redis.call('SET', KEYS[i], t[1], 'NX', 'EX', ttl) then
    local fields = t[2]
    if #fields > 0 then
      if t[3] > 0 then fields[t[3]] = order end
      redis.call('XADD', KEYS[i + 1], '*', unpack(fields))
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
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


def event_view(ev: OrderEvent | Mapping[str, Any], licence: Mapping[str, Any] | None
               ) -> dict[str, Any]:
    """What a rule sees as ``event`` (camelCase, amount in fen, ts in ms), from an event
    as :meth:`OrderEvent.read` gives it (or the model)."""
    e = ev.model_dump() if isinstance(ev, OrderEvent) else ev
    lic = licence or {}
    return {
        "event": e["event"], "eventId": e["event_id"], "site": e["site"],
        "orderId": e["order_id"], "customer": e["customer"], "ip": e["ip"],
        "category": e["category"], "product": e["product"], "region": e["region"],
        "amount": e["amount"], "currency": e["currency"],
        "ts": int(e["ts"].timestamp() * 1000),
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


class Tally:
    """A batch's metrics, counted in dicts and added to the counters once a batch (a
    labelled ``inc`` per event and hit cost more than a rule's evaluation)."""

    def __init__(self) -> None:
        self.actions: dict[str, int] = {}
        self.hits: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.latencies: list[float] = []

    def add(self, verdict: Verdict, entry_id: str, now: float) -> None:
        self.actions[verdict.action] = self.actions.get(verdict.action, 0) + 1
        for h in verdict.hits:
            if h.error:
                k2 = (h.policy, h.rule)
                self.errors[k2] = self.errors.get(k2, 0) + 1
            else:
                k3 = (h.policy, h.rule, "shadow" if h.shadow else "enforce")
                self.hits[k3] = self.hits.get(k3, 0) + 1
        if entry_id:
            ms = int(entry_id.split("-", 1)[0])
            self.latencies.append(max(0.0, now - ms / 1000))

    def flush(self) -> None:
        for action, n in self.actions.items():
            DECISIONS.labels(action).inc(n)
        for k3, n in self.hits.items():
            RULE_HITS.labels(*k3).inc(n)
        for k2, n in self.errors.items():
            RULE_ERRORS.labels(*k2).inc(n)
        observe = LATENCY.observe  # a histogram has no bulk observe: one call an event
        for x in self.latencies:
            observe(x)


class RiskWorker:
    def __init__(self, redis: aioredis.Redis, policies: Policies, store: RiskStore,
                 config: ConsumerConfig | None = None,
                 clock: Callable[[], float] = time.time,
                 escalation: Escalation | None = None) -> None:
        self.redis = redis
        self.store = store
        self.escalation = escalation
        self.policies = policies
        self.velocity = Velocity(redis)
        self._commit = Script(_COMMIT)
        self._lane = Lane(redis)
        self.clock = clock
        cfg = config or ConsumerConfig(group=GROUP)
        # One batch parsed ahead (prefetch), kept with the very list it was parsed from.
        self._ready: tuple[Any, ...] | None = None
        # That batch's velocity call, sent as soon as the batch before it had its answer
        # (see handle_staged), with the list it was sent for.
        self._counted_ahead: tuple[list[Entry], asyncio.Task[Any]] | None = None
        self._counting = False  # a batch's velocity call awaits its answer
        # Resolved once the latest second stage has published (see _finish).
        self._published: asyncio.Future[None] | None = None
        self.consumer = StreamConsumer(redis, cfg,
                                       self.handle_staged if cfg.overlap else self.handle,
                                       prepare=self.prepare if cfg.prefetch else None)

    async def handle(self, entries: list[Entry]) -> None:
        """A batch in three round trips: one script call records and reads every
        velocity feature and snooze (events in stream order, each seeing the ones before
        it), the rules run in process, ONE statement stores every outcome and hit in
        HQ's PostgreSQL, then one script call publishes each decision once. A malformed
        entry raises: the shared machinery retries entries one by one and dead-letters
        that one; it never decides anything."""
        await (await self.handle_staged(entries))

    def _parse(self, entries: list[Entry]) -> tuple[list[dict[str, Any]], list[list[
            CompiledPolicy]], list[tuple[list[tuple[CompiledPolicy, Call]], list[str]]]]:
        """A batch's events as rules see them, their policies and what to ask the
        velocity counters (pure CPU: no Redis)."""
        # The contract's checked reader: a malformed entry raises EventError here, before
        # anything is counted, and is dead-lettered with the fields it names.
        events = [OrderEvent.read(e.fields) for e in entries]
        lics = self.policies.licences
        views = [event_view(ev, lics.get(ev["site"])) for ev in events]
        items = []
        # One list of policies per site a batch (the same object for each of its events:
        # the store keys its generations on it).
        by_site: dict[str, list[CompiledPolicy]] = {}
        site_pols = []
        prepare = self.velocity.prepare
        for view in views:
            pols = by_site.get(view["site"])
            if pols is None:
                pols = by_site[view["site"]] = self.policies.for_site(view["site"])
            site_pols.append(pols)
            items.append(([(p, prepare(p, view)) for p in pols], snooze_keys_of(view)))
        return views, site_pols, items

    def prepare(self, entries: list[Entry]) -> None:
        """The consumer's read-ahead hook (``prefetch``): parse the next batch as soon as
        it arrives, while this batch waits on its velocity round trip (the worker was
        idle there a fifth of the time). A malformed entry is left for the handler to
        raise on (a hook must not raise)."""
        try:
            self._ready = (entries, *self._parse(entries))
        except Exception:
            self._ready = None
            return
        if not self._counting:  # the batch before it has its counts: count this one now
            self._count_next()

    async def handle_staged(self, entries: list[Entry]) -> Awaitable[None]:
        """The first stage (velocity and rules, in stream order: each batch's counters
        see every earlier batch's); returns the second (store, publish, escalation), which
        the consumer runs while the next batch's first stage does (``overlap``)."""
        ready = self._ready
        if ready is not None and ready[0] is entries:
            self._ready = None
            _, views, site_pols, items = ready
        else:  # not parsed ahead (no prefetch, or a retry one by one)
            views, site_pols, items = self._parse(entries)
        ahead = self._counted_ahead
        self._counting = True
        try:
            if ahead is not None and ahead[0] is entries:
                self._counted_ahead = None
                read = await ahead[1]
            else:  # a claimed batch or a retry: the one read ahead keeps its call
                read = await self.velocity.batch(items)
        finally:
            self._counting = False
        if self._count_next():
            # A task starts only when this coroutine yields: without this, the next call
            # left only after this batch's rules had run (a few ms of CPU), and Redis's
            # counting and the rules took turns instead of overlapping (seen in a trace).
            await asyncio.sleep(0)
        outcomes: dict[str, Outcome] = {}
        order: list[Outcome] = []
        for view, pols, (snoozed, feats) in zip(views, site_pols, read, strict=True):
            verdict = evaluate(pols, view, feats)
            lic_hit = license_block(view, self.policies.licences.get(view["site"]))
            if lic_hit is not None:
                verdict = blocked(lic_hit, verdict)
            if snoozed and verdict.action != "allow" and lic_hit is None:
                # Snoozed entity: every hit is still stored, nothing is acted on.
                verdict = Verdict("allow", "", verdict.hits, snoozed=True)
            o = Outcome(view, verdict, pols, feats)
            # The same event twice in one batch (a re-published outbox entry) is one
            # outcome: the velocity counters already saw it once.
            outcomes.setdefault(view["eventId"], o)
            order.append(outcomes[view["eventId"]])
        return self._finish(entries, outcomes, order, self.clock())

    def _count_next(self) -> bool:
        """Send the velocity call of the batch read ahead now, while this one's rules run:
        the worker no longer waits a round trip (Redis's Lua work for a batch) at the
        start of every batch. Sent only once this batch's call has its answer, so Redis
        still counts batch after batch in stream order. True when a call was sent."""
        ready = self._ready
        if ready is None or not ready[0] or (
                self._counted_ahead is not None and self._counted_ahead[0] is ready[0]):
            return False
        task = asyncio.create_task(self.velocity.batch(ready[3]))
        # A call replaced before anyone awaited it (its batch was claimed away or retried
        # one by one) is nobody's error: its failure is read here, not reported by asyncio
        # as "never retrieved" (the batch sends its own call).
        task.add_done_callback(_retrieved)
        self._counted_ahead = (ready[0], task)
        return True

    async def _finish(self, entries: list[Entry], outcomes: dict[str, Outcome],
                      order: list[Outcome], now: float) -> None:
        """The second stage. Two may run at once (``overlap_depth``): the stores overlap,
        each on its own connection, but each batch publishes (and judges escalation)
        only after the batch before it did, so decisions keep stream order."""
        prev, mine = self._published, asyncio.get_running_loop().create_future()
        self._published = mine
        try:
            await self._store_and_publish(entries, outcomes, order, now, prev)
        finally:
            mine.set_result(None)

    async def _store_and_publish(self, entries: list[Entry], outcomes: dict[str, Outcome],
                                 order: list[Outcome], now: float,
                                 prev: asyncio.Future[None] | None) -> None:
        stored = await self.store.save(list(outcomes.values()),
                                       datetime.fromtimestamp(now, UTC))
        keys: list[str] = []
        ev_args: list[str] = []
        esc_items: list[tuple[str, str, str, int, EscalationDef, tuple[bool, bool]]] = []
        # One template per (action, rule) a batch: the contract's Decision is built once
        # and the script sets each event's order id into it.
        templates: dict[tuple[str, str], str] = {}
        streams: dict[str, str] = {}  # per site (decisions_stream checks the name)
        head: list[str] = []
        at = datetime.fromtimestamp(now, UTC)
        # Per event of the batch: True when this call decided it first (for the metrics),
        # or its index in the commit script's result.
        firsts: list[bool | int] = []
        seen: set[str] = set()
        for o in order:
            view = o.view
            eid = view["eventId"]
            action, rule = stored.get(eid, (o.verdict.action, o.verdict.rule))
            # Counted also on a redelivery: the counters are keyed by event id, so
            # counting again is harmless, and a crash between commit and here must not
            # lose the count.
            if self.escalation is not None:
                esc_items += self._escalation_items(view, o.verdict, o.policies)
            if action == "allow":
                # Nothing to publish, so no once-only marker (a key per allowed event,
                # kept for days, was most of what the commit wrote): the stored outcome
                # says whether an earlier delivery decided it. (A crash between the
                # store and here leaves that event out of the metrics, never out of
                # the stored outcomes.)
                firsts.append(eid not in stored and eid not in seen)
                seen.add(eid)
                continue
            n = templates.get((action, rule))
            if n is None:
                n = templates[(action, rule)] = str(len(templates) + 1)
                fields = Decision(order_id="-", action=action,  # type: ignore[arg-type]
                                  rule=rule, ts=at).to_fields()
                head += (action, str(len(fields)))
                head += [x for kv in fields.items() for x in kv]
            site = view["site"]
            stream = streams.get(site)
            if stream is None:
                stream = streams[site] = decisions_stream(site)
            firsts.append(len(ev_args) // 2)
            keys += (RECORD_PREFIX + eid, stream)
            ev_args += (n, view["orderId"])
        calls = [(self._commit, self._commit.command(
            keys, [_TTL, str(len(templates)), *head, *ev_args]))] if keys else []
        pairs: list[tuple[str, str, EscalationDef]] = []
        if self.escalation is not None and esc_items:
            esc_call, pairs = self.escalation.batch_command(esc_items)
            if esc_call is not None:
                calls.append(esc_call)
        if prev is not None:
            await prev
        results = await self._lane.scripts(calls) if calls else []
        done = results[0] if keys else []
        counted = Tally()
        for e, o, first in zip(entries, order, firsts, strict=True):
            if first is True or (first is not False and done[first]):
                counted.add(o.verdict, e.id, now)
        counted.flush()
        # Judged once per (policy, site) a batch, on the counts after its last event: a
        # judgement per event cost a Redis round trip per paid order (a fifth of the
        # worker's time), and the window's rate after the batch is the one that matters.
        if pairs:
            counts = results[-1]
            for i, (name, site, esc_def) in enumerate(pairs):
                assert self.escalation is not None
                await self.escalation.judge(name, site, counts[2 * i:2 * i + 2], esc_def,
                                            self.policies.licences.get(site))

    def _escalation_items(self, view: Mapping[str, Any], verdict: Verdict,
                          policies: Sequence[CompiledPolicy]
                          ) -> list[tuple[str, str, str, int, EscalationDef,
                                          tuple[bool, bool]]]:
        """The event's counting for every policy it was decided under (those applying to
        its site) with a siteEscalation, each over its own window."""
        if self.escalation is None:
            return []
        kinds = self.escalation.counts_for(view["event"], verdict.action)
        if kinds is None:
            return []
        return [(pol.name, view["site"], view["eventId"], view["ts"], pol.escalation, kinds)
                for pol in policies if pol.escalation is not None]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.consumer.run(stop)
        finally:
            ahead, self._counted_ahead = self._counted_ahead, None
            if ahead is not None:
                await _forget(ahead[1])
            await self.store.close()


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _forget(task: asyncio.Task[Any]) -> None:
    """Wait for a velocity call nobody will read: the counting it did stays (its events
    are counted once, whenever they are decided), and its failure is not an error here
    (their batch sends its own call)."""
    with contextlib.suppress(Exception):
        await task
