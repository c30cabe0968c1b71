"""The risk worker on real Redis: the default policy's rules on crafted sequences and on
normal traffic, shadow rules, broken rules, and a worker killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
import yaml

from kameng.contracts.events import Decision, OrderEvent, decisions_stream
from kameng.workers.risk.policy import compile_policy, evaluate
from kameng.workers.risk.store import RiskStore
from kameng.workers.risk.worker import Policies, RiskWorker, event_view
from kameng.workers.streams import ConsumerConfig, Entry

from ..support.risk import decision_row, hq_database

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "manifests/samples/riskpolicy-default.yaml").read_text())


@pytest.fixture(scope="module")
def hq_dsn(pg_admin_dsn):
    with hq_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture
async def r(redis_url, hq_dsn):
    client = aioredis.from_url(redis_url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    yield client, tag, hq_dsn
    for pattern in (f"ktest:{tag}:*", f"kameng:decisions:rt{tag}*", f"kameng:orders:rt{tag}*",
                    f"kameng:risk:*{tag}*"):
        async for key in client.scan_iter(match=pattern):
            await client.delete(key)
    await client.aclose()


def _worker(client, dsn: str, tag: str, policies: list,
            licences: dict | None = None) -> RiskWorker:
    cfg = ConsumerConfig(group="risk", consumer="t", prefix=f"ktest:{tag}:orders:", batch=100,
                         block_ms=20, claim_seconds=3600, discover_seconds=0,
                         trim_seconds=3600)
    return RiskWorker(client, Policies(policies=policies, licences=licences or {}),
                      RiskStore(dsn), cfg)


async def _feed(client, tag: str, site: str, events: list[OrderEvent],
                worker: RiskWorker) -> None:
    for ev in events:
        await client.xadd(f"ktest:{tag}:orders:{site}", ev.to_fields())
    decided = 0
    for _ in range(200):
        decided += await worker.consumer.step()
        if decided >= len(events):
            return
    raise AssertionError(f"only {decided}/{len(events)} events decided")


async def _record(dsn: str, ev: OrderEvent) -> dict:
    """The outcome stored in HQ's PostgreSQL (hits with ``shadow`` for the mode)."""
    rec = decision_row(dsn, ev.event_id)
    assert rec, f"no decision stored for {ev.event_id}"
    for h in rec["hits"]:
        h["shadow"] = h["mode"] == "shadow"
    return rec


async def _decisions(client, site: str) -> list[Decision]:
    return [Decision.from_fields(f) for _, f in await client.xrange(decisions_stream(site))]


def _ev(tag: str, site: str, kind: str, n: int, **kw) -> OrderEvent:
    kw.setdefault("customer", f"cust-{tag}")
    kw.setdefault("ip", f"ip-{tag}")
    kw.setdefault("category", "game-cards")
    kw.setdefault("amount", 5000)
    oid = f"o-{tag}-{kind}-{n}-{uuid.uuid4().hex[:6]}"
    return OrderEvent.for_order(kind, site=site, order_id=oid, **kw)


def _default(name: str = "default", **spec_overrides):
    spec = {**DEFAULT["spec"], **spec_overrides}
    return compile_policy(f"{name}", spec)


CASES = {
    # rule → (event sequence builder, the rules the sequence may hit)
    "topup-burst": (lambda t, s: [_ev(t, s, "topup", i, customer=f"tb{t}") for i in range(6)],
                    {"topup-burst"}),
    "topup-flood": (lambda t, s: [_ev(t, s, "topup", i, customer=f"tf{t}") for i in range(21)],
                    {"topup-burst", "topup-flood"}),
    "large-withdrawal": (lambda t, s: [_ev(t, s, "withdrawal.requested", 0, customer=f"lw{t}",
                                           amount=600000)], {"large-withdrawal"}),
    "very-large-withdrawal": (lambda t, s: [_ev(t, s, "withdrawal.requested", 0,
                                                customer=f"vw{t}", amount=6_000_000)],
                              {"large-withdrawal", "very-large-withdrawal"}),
    "customer-amount-24h": (lambda t, s: [_ev(t, s, "order.paid", i, customer=f"ca{t}",
                                              ip=f"ca-ip{t}-{i}", amount=800000)
                                          for i in range(3)], {"customer-amount-24h"}),
    "customer-velocity-10m": (lambda t, s: [_ev(t, s, "order.paid", i, customer=f"cv{t}",
                                                ip=f"cv-ip{t}-{i}") for i in range(11)],
                              {"customer-velocity-10m"}),
    "ip-velocity-10m": (lambda t, s: [_ev(t, s, "order.paid", i, customer=f"iv{t}-{i}",
                                          ip=f"iv{t}") for i in range(31)],
                        {"ip-velocity-10m"}),
    "ip-amount-24h": (lambda t, s: [_ev(t, s, "order.paid", i, customer=f"ia{t}-{i}",
                                        ip=f"ia{t}", amount=900000) for i in range(6)],
                      {"ip-amount-24h"}),
    "refund-rate": (lambda t, s: [
        *[_ev(t, s, "order.paid", i, customer=f"rr{t}", ip=f"rr-ip{t}-{i}") for i in range(4)],
        *[_ev(t, s, "order.refunded", i, customer=f"rr{t}", ip=f"rr-ip{t}-{i}")
          for i in range(3)],
        _ev(t, s, "order.paid", 9, customer=f"rr{t}", ip=f"rr-ip{t}-9")], {"refund-rate"}),
    "category-outside-license": (lambda t, s: [_ev(t, s, "order.paid", 0, customer=f"co{t}",
                                                   category="gift-cards")],
                                 {"category-outside-license"}),
    "region-outside-license": (lambda t, s: [_ev(t, s, "order.created", 0, customer=f"ro{t}",
                                                 region="US-NY")],
                               {"region-outside-license"}),
}


def test_every_default_rule_has_a_case():
    assert {r["name"] for r in DEFAULT["spec"]["rules"]} == set(CASES)


@pytest.mark.parametrize("rule", sorted(CASES))
async def test_default_rule_fires_on_its_sequence(r, rule):
    client, tag, dsn = r
    site = f"rt{tag}"
    lic = {site: {"categories": ["game-cards"], "regions": ["CN-BJ"]}}
    w = _worker(client, dsn, tag, [_default()], lic)
    build, allowed = CASES[rule]
    events = build(tag, site)
    await _feed(client, tag, site, events, w)
    hit = set()
    for ev in events:
        rec = await _record(dsn, ev)
        hit |= {h["rule"] for h in rec["hits"]}
    assert rule in hit
    assert hit <= allowed, f"{rule}'s sequence also hit {hit - allowed}"
    last = await _record(dsn, events[-1])
    want = max((x["action"] for x in DEFAULT["spec"]["rules"] if x["name"] in hit),
               key=["allow", "review", "freeze", "block"].index)
    assert last["action"] == want
    published = await _decisions(client, site)
    assert published
    assert published[-1].order_id == events[-1].order_id
    assert published[-1].action == want


async def test_normal_traffic_hits_nothing(r):
    client, tag, dsn = r
    site = f"rt{tag}"
    lic = {site: {"categories": ["game-cards"], "regions": ["CN-BJ"]}}
    w = _worker(client, dsn, tag, [_default()], lic)
    events = []
    for c in range(40):  # 40 customers, each: a top-up, two small orders, one refund in 10
        cust, ip = f"n{tag}-{c}", f"nip{tag}-{c % 20}"
        events.append(_ev(tag, site, "topup", c, customer=cust, ip=ip, amount=10000))
        for k in range(2):
            events.append(_ev(tag, site, "order.created", c * 10 + k, customer=cust, ip=ip,
                              region="CN-BJ"))
            events.append(_ev(tag, site, "order.paid", c * 10 + k, customer=cust, ip=ip,
                              region="CN-BJ", amount=3000 + 100 * k))
        if c % 10 == 0:
            events.append(_ev(tag, site, "order.refunded", c, customer=cust, ip=ip))
        events.append(_ev(tag, site, "withdrawal.requested", c, customer=cust, ip=ip,
                          amount=20000))
    await _feed(client, tag, site, events, w)
    for ev in events:
        rec = await _record(dsn, ev)
        assert rec["hits"] == [], rec
        assert rec["action"] == "allow", rec
    assert await _decisions(client, site) == []


async def test_strongest_action_wins_and_shadow_rules_never_act(r):
    client, tag, dsn = r
    site = f"rt{tag}"
    enforce = compile_policy("p-enforce", {"rules": [
        {"name": "rev", "expression": "event.amount > 100", "action": "review"},
        {"name": "frz", "expression": "event.amount > 1000", "action": "freeze"},
        {"name": "shadow-block", "expression": "event.amount > 0", "action": "block",
         "mode": "shadow"}]})
    shadow = compile_policy("p-shadow", {"mode": "shadow", "rules": [
        {"name": "blk", "expression": "true", "action": "block"}]})
    w = _worker(client, dsn, tag, [enforce, shadow])
    big, small, tiny = (_ev(tag, site, "order.paid", i, amount=a)
                        for i, a in enumerate((5000, 500, 50)))
    await _feed(client, tag, site, [big, small, tiny], w)
    assert (await _record(dsn, big))["action"] == "freeze"
    assert (await _record(dsn, small))["action"] == "review"
    rec = await _record(dsn, tiny)
    # Both shadow rules hit and are stored, and neither acted.
    assert {(h["rule"], h["shadow"]) for h in rec["hits"]} == {("shadow-block", True),
                                                               ("blk", True)}
    assert rec["action"] == "allow"
    assert [(d.order_id, d.action) for d in await _decisions(client, site)] == [
        (big.order_id, "freeze"), (small.order_id, "review")]


async def test_broken_rule_is_reported_and_the_others_run(r):
    client, tag, dsn = r
    site = f"rt{tag}"
    spec = {"features": [{"name": "n", "key": "customer", "window": "1h"}], "rules": [
        {"name": "good", "expression": "event.amount > 100", "action": "review"},
        {"name": "syntax", "expression": "event.amount >", "action": "block"},
        {"name": "typo", "expression": "event.amout > 1", "action": "block"},
        {"name": "later-bad", "expression": "features.n > 0", "action": "freeze"}]}
    v1 = compile_policy("p", spec, 1)
    assert [e.rule for e in v1.errors] == ["syntax", "typo"]
    assert v1.errors[0].error.startswith("column 15: Syntax error")
    assert "amout" in v1.errors[1].error
    # v2 breaks a rule that compiled in v1: its last valid version keeps running.
    spec2 = {**spec, "rules": [*spec["rules"][:3],
                               {"name": "later-bad", "expression": "features.n >",
                                "action": "freeze"}]}
    v2 = compile_policy("p", spec2, 2, previous=v1)
    assert {e.rule for e in v2.errors} == {"syntax", "typo", "later-bad"}
    assert {x.name for x in v2.rules} == {"good", "later-bad"}
    w = _worker(client, dsn, tag, [v2])
    ev = _ev(tag, site, "order.paid", 0, amount=500)
    await _feed(client, tag, site, [ev], w)
    rec = await _record(dsn, ev)
    assert rec["action"] == "freeze"
    assert {h["rule"] for h in rec["hits"]} == {"good", "later-bad"}


async def test_rule_failing_at_run_time_does_not_decide(r):
    client, tag, dsn = r
    site = f"rt{tag}"
    pol = compile_policy("p", {"rules": [
        {"name": "ok", "expression": "event.amount > 100", "action": "review"},
        # Compiles against the sample (int/int) but divides by zero on a zero amount.
        {"name": "div", "expression": "100 / event.amount > 1", "action": "block"}]})
    w = _worker(client, dsn, tag, [pol])
    ev = _ev(tag, site, "order.paid", 0, amount=0)
    ev2 = _ev(tag, site, "order.paid", 1, amount=500)
    await _feed(client, tag, site, [ev, ev2], w)
    rec = await _record(dsn, ev)
    assert rec["action"] == "allow"
    assert [h["rule"] for h in rec["hits"] if h["error"]] == ["div"]
    assert (await _record(dsn, ev2))["action"] == "review"


async def test_redelivered_event_is_decided_once(r):
    client, tag, dsn = r
    site = f"rt{tag}"
    pol = compile_policy("p", {"features": [
        {"name": "n", "key": "customer", "window": "1h"}], "rules": [
        {"name": "second", "expression": "features.n >= 2", "action": "review"}]})
    w = _worker(client, dsn, tag, [pol])
    ev = _ev(tag, site, "order.paid", 0)
    # The same event twice (a re-published outbox entry): counted once, decided once.
    await _feed(client, tag, site, [ev, ev], w)
    assert (await _record(dsn, ev))["action"] == "allow"
    assert await _decisions(client, site) == []


async def test_worker_killed_mid_batch_loses_and_duplicates_no_decision(r, redis_url,
                                                                        tmp_path):
    client, tag, dsn = r
    site = f"rt{tag}"
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"metadata": {"name": f"kill{tag}"}, "spec": {
        "sites": [site],
        "features": [{"name": "n", "key": "customer", "window": "1h"}],
        "rules": [{"name": "every", "expression": "event.amount > 0", "action": "review"}]}}))
    n = 3000
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(f"ktest:{tag}:orders:{site}",
                      _ev(tag, site, "order.paid", i, customer=f"k{tag}-{i % 50}").to_fields())
        await pipe.execute()
    env = {**os.environ, "KAMENG_REDIS_URL": redis_url, "KAMENG_HQ_DATABASE_URL": dsn}
    cmd = [sys.executable, "-m", "kameng.cli.main", "risk", "run", "--no-kube",
           "--metrics-port", "0", "--policy-file", str(policy), "--batch", "200",
           "--claim-idle-ms", "300", "--prefix", f"ktest:{tag}:orders:"]

    async def decided() -> int:
        return int(await client.xlen(decisions_stream(site)))

    log = (tmp_path / "worker.log").open("wb")

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=log)

    first = await start()
    try:
        for _ in range(600):
            if await decided() >= n // 4:
                break
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # mid-batch: no chance to acknowledge anything
        await asyncio.wait_for(first.wait(), 10)
        at_kill = await decided()
        assert 0 < at_kill < n, f"{at_kill} decided when killed"
        second = await start()
        try:
            for _ in range(1500):
                if await decided() >= n:
                    pending = await client.xpending(f"ktest:{tag}:orders:{site}", "risk")
                    if not pending["pending"]:
                        break
                await asyncio.sleep(0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 20)
    finally:
        if first.returncode is None:
            first.kill()
        log.close()
    orders = [Decision.from_fields(f).order_id
              for _, f in await client.xrange(decisions_stream(site))]
    assert len(orders) == n, f"{len(orders)} decisions for {n} events"
    assert len(set(orders)) == n, "an event was decided twice"
    async for key in client.scan_iter(match=f"kameng:risk:v:kill{tag}:*"):
        await client.delete(key)


async def test_backtest_replays_stored_events_through_another_version(r):
    from kameng.workers.risk import backtest

    client, tag, dsn = r
    site = f"rt{tag}"
    live = compile_policy(f"bt{tag}", {"sites": [site], "features": [
        {"name": "n", "key": "customer", "window": "1h"}], "rules": [
        {"name": "big", "expression": "event.amount > 1000", "action": "review"}]})
    w = _worker(client, dsn, tag, [live])
    events = [_ev(tag, site, "order.paid", i, customer=f"bt{tag}", amount=a)
              for i, a in enumerate((500, 5000, 500))]
    await _feed(client, tag, site, events, w)
    # The new version: velocity instead of amount. Its counters are rebuilt in scratch
    # keys from the stored events, in order, and the live counters are left alone.
    new = compile_policy(f"bt{tag}", {"sites": [site], "features": [
        {"name": "n", "key": "customer", "window": "1h"}], "rules": [
        {"name": "third", "expression": "features.n >= 3", "action": "block"}]})
    live_keys = sorted([k async for k in client.scan_iter(match=f"kameng:risk:v:bt{tag}:*")])
    since = min(int(e.ts.timestamp() * 1000) for e in events) - 1
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        stored = await backtest.stored_events(conn, since, site)
    rows = await backtest.replay(client, new, stored)
    assert [(x.order_id, x.decided, x.would) for x in rows] == [
        (events[0].order_id, "allow", "allow"), (events[1].order_id, "review", "allow"),
        (events[2].order_id, "allow", "block")]
    assert "decided review → would allow  1" in backtest.summary(rows)
    assert sorted([k async for k in client.scan_iter(match=f"kameng:risk:v:bt{tag}:*")]) \
        == live_keys
    assert not [k async for k in client.scan_iter(match="kameng:risk:bt:*")]
    for key in live_keys:
        await client.delete(key)


class _CountingStore(RiskStore):
    """The real store on the real database, counting the statements a batch costs."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.statements = 0

    async def save(self, outcomes, decided_at):
        self.statements += 1
        return await super().save(outcomes, decided_at)


async def test_outcomes_and_hits_stored_in_one_statement_a_batch(r):
    client, tag, dsn = r
    site = f"rt{tag}"
    pol = compile_policy(f"st{tag}", {"features": [
        {"name": "n", "key": "customer", "window": "1h"},
        {"name": "spent", "key": "customer", "window": "1h", "aggregate": "sum"}], "rules": [
        {"name": "big", "expression": "event.amount > 1000", "action": "review",
         "reason": "large"},
        {"name": "seen", "expression": "features.n >= 1", "action": "block", "mode": "shadow",
         "reason": "shadow check"}]}, 7)
    w = _worker(client, dsn, tag, [pol])
    store = _CountingStore(dsn)
    w.store = store
    events = [_ev(tag, site, "order.paid", i, customer=f"s{tag}", amount=2000)
              for i in range(50)]
    await _feed(client, tag, site, events, w)
    assert store.statements == 1  # 50 events, 100 hits: one round trip to PostgreSQL
    rec = await _record(dsn, events[2])
    assert (rec["action"], rec["rule"]) == ("review", f"st{tag}/big")
    assert rec["policies"] == {f"st{tag}": 7}
    assert rec["features"] == {f"st{tag}": {"n": 3, "spent": 6000}}
    assert [(h["rule"], h["mode"], h["generation"], h["reason"], h["features"])
            for h in rec["hits"]] == [
        ("big", "enforce", 7, "large", {"n": 3, "spent": 6000}),
        ("seen", "shadow", 7, "shadow check", {"n": 3, "spent": 6000})]


async def test_replay_after_a_crash_publishes_what_was_stored_once(r):
    """A worker stored an outcome and died before publishing it; the redelivery (under a
    policy that changed meanwhile) publishes the STORED action, once; a second replica
    handling the same entries at the same time adds nothing."""
    from kameng.workers.risk.store import Outcome

    client, tag, dsn = r
    site = f"rt{tag}"
    old = compile_policy(f"cr{tag}", {"rules": [
        {"name": "all", "expression": "event.amount > 0", "action": "freeze"}]}, 1)
    new = compile_policy(f"cr{tag}", {"rules": [
        {"name": "none", "expression": "event.amount < 0", "action": "block"}]}, 2)
    ev = _ev(tag, site, "order.paid", 0)
    view = event_view(ev, None)
    verdict = evaluate([old], view, {old.name: {}})
    await RiskStore(dsn).save([Outcome(view, verdict, [old], {old.name: {}})],
                              datetime.now(UTC))
    others = [_ev(tag, site, "order.paid", i, amount=7) for i in range(1, 40)]
    await client.xadd(f"ktest:{tag}:orders:{site}", ev.to_fields())
    for o in others:
        await client.xadd(f"ktest:{tag}:orders:{site}", o.to_fields())
    entries = [Entry(f"ktest:{tag}:orders:{site}", eid, f) for eid, f in
               await client.xrange(f"ktest:{tag}:orders:{site}")]
    w1, w2 = _worker(client, dsn, tag, [new]), _worker(client, dsn, tag, [new])
    await asyncio.gather(w1.handle(entries), w2.handle(entries))
    await w1.handle(entries)  # and a plain redelivery
    assert [(d.order_id, d.action) for d in await _decisions(client, site)] == [
        (ev.order_id, "freeze")]
    with psycopg.connect(dsn) as conn:
        n = conn.execute("SELECT count(*) FROM risk.decisions WHERE site = %s",
                         (site,)).fetchone()[0]
        hits = conn.execute("SELECT sum(jsonb_array_length(hits)) FROM risk.decisions"
                            " WHERE site = %s", (site,)).fetchone()[0]
    assert (n, hits) == (40, 1)


class _SlowFirstStore(RiskStore):
    """Stores the batch holding ``slow`` late, so the batch after it (with two second
    stages in flight) stores first; counts the saves running at once."""

    def __init__(self, dsn: str, slow: str) -> None:
        super().__init__(dsn)
        self.slow, self.running, self.most = slow, 0, 0

    async def save(self, outcomes, decided_at):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if any(o.view["eventId"] == self.slow for o in outcomes):
                await asyncio.sleep(0.3)
            return await super().save(outcomes, decided_at)
        finally:
            self.running -= 1


@pytest.mark.parametrize("depth", [1, 2])
async def test_overlapped_batches_keep_order_and_decide_every_event_once(r, depth):
    """``overlap``: batch N+1 is decided while batch N (and with ``overlap_depth`` 2, batch
    N-1 too) is stored and published. Velocity still runs batch after batch (the 26th
    event sees the 25 before it, across batches of 10, with each batch's velocity call
    sent ahead), every event is stored and acknowledged once, and decisions keep stream
    order even when a later batch's store finishes first."""
    client, tag, dsn = r
    site = f"rt{tag}"
    pol = compile_policy(f"ov{tag}", {"sites": [site], "features": [
        {"name": "n", "key": "customer", "window": "1h"}], "rules": [
        {"name": "many", "expression": "features.n > 25", "action": "review"}]})
    cfg = ConsumerConfig(group="risk", consumer="t", prefix=f"ktest:{tag}:orders:", batch=10,
                         block_ms=20, claim_seconds=3600, discover_seconds=0,
                         trim_seconds=3600, prefetch=True, overlap=True, overlap_depth=depth)
    events = [_ev(tag, site, "order.paid", i, customer=f"ov{tag}") for i in range(50)]
    store = _SlowFirstStore(dsn, events[25].event_id)
    w = RiskWorker(client, Policies(policies=[pol]), store, cfg)
    assert w.consumer.handler == w.handle_staged
    # A batch's velocity call is sent ahead, but never while another awaits its answer:
    # Redis must count batch after batch.
    counting, most_counting, batch = 0, 0, w.velocity.batch

    async def one_at_a_time(items):
        nonlocal counting, most_counting
        counting += 1
        most_counting = max(most_counting, counting)
        try:
            return await batch(items)
        finally:
            counting -= 1

    w.velocity.batch = one_at_a_time
    for ev in events:
        await client.xadd(f"ktest:{tag}:orders:{site}", ev.to_fields())
    acked = 0
    for _ in range(50):
        acked += await w.consumer.step()
    acked += await w.consumer.settle()
    assert acked == 50
    pending = await client.xpending(f"ktest:{tag}:orders:{site}", "risk")
    assert pending["pending"] == 0
    actions = [(await _record(dsn, ev))["action"] for ev in events]
    assert actions == ["allow"] * 25 + ["review"] * 25
    assert [d.order_id for d in await _decisions(client, site)] == \
        [ev.order_id for ev in events[25:]]
    assert store.most == depth
    assert most_counting == 1
    await w.store.close()


@pytest.mark.parametrize("ahead", [False, True], ids=["in-line", "read-ahead"])
async def test_a_malformed_event_is_dead_lettered_naming_the_field_and_the_rest_decided(
        r, ahead):
    """The contract's checked reader (``OrderEvent.read``) rejects the entry before
    anything is counted; the batch is retried one by one, the bad entry goes to the dead
    letters with a reason naming the field (never its value), and the others are
    decided. Also when the batch was parsed ahead (``prefetch``: the read-ahead hook
    leaves a batch it cannot parse to the handler)."""
    from dataclasses import replace

    from kameng.workers.streams import dead_letter_stream

    client, tag, dsn = r
    site = f"rt{tag}"
    stream = f"ktest:{tag}:orders:{site}"
    good = [_ev(tag, site, "order.paid", i) for i in range(3)]
    bad = {**_ev(tag, site, "order.paid", 9).to_fields(), "amount": "-5",
           "customer": f"secret-{tag}"}
    w = _worker(client, dsn, tag, [_default(f"dl{tag}")])
    w.consumer.cfg = replace(w.consumer.cfg, max_deliveries=1, prefetch=ahead, overlap=ahead)
    if ahead:
        w.consumer.handler, w.consumer.prepare = w.handle_staged, w.prepare
    await client.xadd(stream, good[0].to_fields())
    bad_id = await client.xadd(stream, bad)
    for ev in good[1:]:
        await client.xadd(stream, ev.to_fields())
    for _ in range(20):
        await w.consumer.step()
        if not await client.xpending(stream, "risk") and \
                all(decision_row(dsn, ev.event_id) for ev in good):
            break
    for ev in good:
        assert decision_row(dsn, ev.event_id) is not None
    assert decision_row(dsn, bad["event_id"]) is None
    dead = [(i, f) for i, f in await client.xrange(dead_letter_stream("risk"))
            if f.get("dl_stream") == stream]
    try:
        assert [f["dl_id"] for _, f in dead] == [bad_id]
        reason = dead[0][1]["dl_error"]
        assert "EventError" in reason
        assert "amount" in reason
        assert f"secret-{tag}" not in reason
        # Nothing was counted for it: its customer's counters do not exist.
        assert not [k async for k in client.scan_iter(match=f"kameng:risk:v:*secret-{tag}*")]
    finally:
        if dead:
            await client.xdel(dead_letter_stream("risk"), *[i for i, _ in dead])


async def test_an_allowed_event_leaves_no_marker_and_is_counted_once(r):
    """Nothing is published for ``allow``, so no once-only marker is written for it (a
    key per allowed order, kept for a week, was most of the commit's writes); its stored
    outcome still makes a redelivery count nothing twice. A frozen one keeps its
    marker."""
    from prometheus_client import REGISTRY

    client, tag, dsn = r
    site = f"rt{tag}"
    pol = compile_policy(f"al{tag}", {"rules": [
        {"name": "big", "expression": "event.amount > 100000", "action": "freeze"}]})
    allowed = _ev(tag, site, "order.paid", 0, amount=10)
    frozen = _ev(tag, site, "order.paid", 1, amount=200000)
    stream = f"ktest:{tag}:orders:{site}"
    for ev in (allowed, frozen):
        await client.xadd(stream, ev.to_fields())
    entries = [Entry(stream, eid, f) for eid, f in await client.xrange(stream)]

    def count(action: str) -> float:
        return REGISTRY.get_sample_value("kameng_risk_decisions_total",
                                         {"action": action}) or 0.0

    before = count("allow"), count("freeze")
    w = _worker(client, dsn, tag, [pol])
    await w.handle(entries)
    await w.handle(entries)  # a redelivery
    await w.handle([entries[0], entries[0]])  # the same entry twice in a batch
    assert (count("allow") - before[0], count("freeze") - before[1]) == (1, 1)
    assert not await client.exists(f"kameng:risk:d:{allowed.event_id}")
    assert await client.get(f"kameng:risk:d:{frozen.event_id}") == "freeze"
    assert [d.order_id for d in await _decisions(client, site)] == [frozen.order_id]
    rec = decision_row(dsn, allowed.event_id)
    assert rec is not None
    assert rec["action"] == "allow"


def test_hits_of_a_previous_release_are_moved_into_their_decision_and_still_read(hq_dsn):
    """hq_1003: hits stored one row each in ``risk.hits`` move into their decision's row;
    a worker of the previous release still writing there during a rolling upgrade is read
    too, and the table is kept for it (expand, then contract)."""
    from kameng.workers.risk.review import order
    from kameng_storefront.db import migration_files

    (sql,) = [s for v, s in migration_files("hq") if v == "hq_1003_risk_hits_in_decision"]
    old, late = f"old{uuid.uuid4().hex[:8]}", f"late{uuid.uuid4().hex[:8]}"
    row = ("INSERT INTO risk.decisions (event_id, site, order_id, event, amount, event_at,"
           " action, rule, policies, features, decided_at) VALUES (%s, 's', %s, 'order.paid',"
           " 100, now(), 'review', 'p/big', '{\"p\": 3}', '{\"p\": {\"n\": 7}}', now())")
    hit = ("INSERT INTO risk.hits (event_id, policy, rule, generation, mode, action, reason)"
           " VALUES (%s, 'p', %s, 3, 'enforce', 'review', 'why')")
    with psycopg.connect(hq_dsn, autocommit=True) as conn:
        conn.execute(row, (f"{old}:order.paid", old))
        conn.execute(hit, (f"{old}:order.paid", "big"))
        conn.execute(hit, (f"{old}:order.paid", "alpha"))
        with conn.transaction():
            conn.execute(sql)  # as an upgrade finds it: rows of the previous layout
        moved = conn.execute("SELECT hits FROM risk.decisions WHERE event_id = %s",
                             (f"{old}:order.paid",)).fetchone()[0]
        left = conn.execute("SELECT count(*) FROM risk.hits").fetchone()[0]
        # Stored meanwhile by a worker of the previous release.
        conn.execute(row, (f"{late}:order.paid", late))
        conn.execute(hit, (f"{late}:order.paid", "big"))
    assert [h["rule"] for h in moved] == ["alpha", "big"]
    assert moved[0] == {"policy": "p", "rule": "alpha", "generation": 3, "mode": "enforce",
                        "action": "review", "reason": "why", "error": ""}
    assert left == 0

    async def read(oid: str) -> list[dict]:
        async with await psycopg.AsyncConnection.connect(hq_dsn) as conn:
            got = await order(conn, oid)
        assert got is not None
        return got["events"][0]["hits"]

    for oid, rules in ((old, ["alpha", "big"]), (late, ["big"])):
        hits = asyncio.run(read(oid))
        assert [(h["rule"], h["features"]) for h in hits] == [(r, {"n": 7}) for r in rules]
