"""Settlement on the real dev environment: order events → the ledger (PostgreSQL) through
the shared consumer-group machinery (Redis); payouts against Licenses on the API server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import redis.asyncio as aioredis

from kameng.kube.client import Kube
from kameng.ledger import rules
from kameng.ledger.verify import verify
from kameng.payouts import SandboxPayoutProvider
from kameng.workers.settlement.licenses import LicenseBook
from kameng.workers.settlement.worker import Settlement
from kameng.workers.streams import ConsumerConfig, dead_letter_stream
from tests.support.ledger import event, license_obj, record_payment, setup_ledger
from tests.support.storefront import temp_database

OCT = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def dsn(pg_admin_dsn):
    with temp_database(pg_admin_dsn, "ledger") as d:
        yield d


@pytest.fixture
async def rp(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    prefix = f"ktest:{uuid.uuid4().hex[:8]}:orders:"
    yield client, prefix
    async for key in client.scan_iter(match=prefix.replace(":orders:", ":*")):
        await client.delete(key)
    await client.delete(dead_letter_stream(f"settle-{prefix}"))
    await client.aclose()


def _worker(dsn, rp, book, limit=5_000_000_00, name="one") -> Settlement:
    client, prefix = rp
    cfg = ConsumerConfig(group=f"settle-{prefix}", consumer=name, prefix=prefix, batch=100,
                         block_ms=20, claim_idle_ms=200, claim_seconds=0.0,
                         discover_seconds=0.0, trim_seconds=3600.0, max_deliveries=2)
    return Settlement(dsn, client, book,
                      SandboxPayoutProvider(lambda: psycopg.AsyncConnection.connect(dsn), limit),
                      cfg)


async def _drain(w: Settlement, rounds: int = 200) -> None:
    """Step until every stream's group has nothing pending and nothing unread."""
    client = w.consumer.redis
    for _ in range(rounds):
        await w.consumer.step()
        busy = False
        for s in w.consumer.streams:
            for g in await client.xinfo_groups(s):
                if g["name"] == w.consumer.cfg.group and (g["pending"] or g.get("lag")):
                    busy = True
        if w.consumer.streams and not busy:
            return
    raise AssertionError("the worker did not drain its streams")


async def _balances(dsn) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        rows = await (await conn.execute("SELECT name, balance FROM ledger.accounts")).fetchall()
    return {n: b for n, b in rows}


async def _one(dsn, sql, *args):
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await (await conn.execute(sql, args)).fetchall()


async def test_purchase_refund_and_withdrawal_make_the_right_entries(dsn, rp):
    await setup_ledger(dsn)
    client, prefix = rp
    site = "alpha"
    book = LicenseBook()
    book.set([license_obj(site)])
    for f in (event("order.paid", site, "O1", 10000, ts=OCT),
              event("order.paid", site, "O2", 3000, "mobile-topup", ts=OCT),
              event("order.refunded", site, "O1", 2500, ts=OCT),
              event("withdrawal.requested", site, "W1", 5000, category="", ts=OCT)):
        await client.xadd(prefix + site, f)
    await record_payment(dsn, site, "O1", 10000, refunded=2500)
    await record_payment(dsn, site, "O2", 3000)
    w = _worker(dsn, rp, book)
    await _drain(w)
    b = await _balances(dsn)
    # share: 8 % of 10000 = 800; 2.5 % of 3000 = 75; a quarter refunded gives back 200.
    assert b[rules.ESCROW] == 10000 + 3000 - 2500
    assert b[rules.REVENUE_SHARE] == -(800 + 75 - 200)
    assert b[rules.payable(site)] == -(9200 + 2925 - 2300) + 5000
    assert b[rules.withdrawals(site)] == -5000
    # The rates in force are recorded on each entry (a JSON object, not a JSON string).
    assert (await _one(dsn, "SELECT DISTINCT rates->'share_bp' FROM ledger.entries"
                            " WHERE kind = 'sale'")) == [({"game-cards": 800,
                                                          "mobile-topup": 250},)]
    # The payout: not held (active license) → paid through the sandbox and posted.
    await w.housekeeping(now=OCT)
    b = await _balances(dsn)
    assert b[rules.withdrawals(site)] == 0
    assert b[rules.ESCROW] == 10500 - 5000
    assert (await _one(dsn, "SELECT status FROM ledger.withdrawals"))[0][0] == "paid"
    # The October statement closes once October has ended.
    await w.housekeeping(now=datetime(2026, 11, 1, tzinfo=UTC))
    (fig,) = (await _one(dsn, "SELECT figures FROM ledger.statements WHERE site = %s", site))[0]
    assert fig["gross"] == 13000
    assert fig["refunds"] == 2500
    assert fig["revenue_share"] == {"game-cards": 600, "mobile-topup": 75}
    assert fig["base_fee"] == 100000  # 12 000.00 a year = 1 000.00 a month
    assert fig["net_payable"] == 13000 - 2500 - 675 - 100000
    assert fig["withdrawals"] == 5000
    assert fig["closing"] == fig["net_payable"] - 5000
    assert [o["order_id"] for o in fig["orders"]] == ["O1", "O2"]
    assert fig["orders"][0] == {"order_id": "O1", "category": "game-cards", "gross": 10000,
                                "refunded": 2500, "share": 600, "net": 6900}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await verify(conn) == []
    # verify names a difference: HQ received money the ledger never saw.
    await record_payment(dsn, site, "O9", 777)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await verify(conn) == [
            "site alpha: ledger has 10500 CNY fen received net of refunds, payments say "
            "11277 (difference -777)"]


async def test_wallet_money_enters_escrow_once_at_its_top_up(dsn, rp):
    """Top-up 100.00, an order of 60.00 paid from the wallet, 20.00 of it refunded to the
    wallet: HQ received 100.00 once (the top-up), not 160.00 and not 40.00."""
    await setup_ledger(dsn)
    client, prefix = rp
    site = "walla"
    book = LicenseBook()
    book.set([license_obj(site)])
    for f in (event("topup", site, "T1", 10000, category="", funding="channel", ts=OCT),
              event("order.paid", site, "O1", 6000, funding="wallet", ts=OCT),
              event("order.refunded", site, "O1", 2000, funding="wallet", ts=OCT)):
        await client.xadd(prefix + site, f)
    # HQ's payments: the top-up came through the channel; the order is a wallet payment.
    await record_payment(dsn, site, "T1", 10000, kind="topup")
    await record_payment(dsn, site, "O1", 6000, refunded=2000, kind="wallet")
    w = _worker(dsn, rp, book)
    await _drain(w)
    b = await _balances(dsn)
    # By hand: share 8 % of 60.00 = 4.80; a third refunded gives back 1.60.
    assert b[rules.ESCROW] == 10000  # the top-up, and nothing else, entered escrow
    assert b[rules.wallets(site)] == -(10000 - 6000 + 2000)  # customers hold 60.00
    assert b[rules.REVENUE_SHARE] == -(480 - 160)
    assert b[rules.payable(site)] == -((6000 - 480) - (2000 - 160))  # partner is owed 36.80
    assert sum(b.values()) == 0
    await w.housekeeping(now=datetime(2026, 11, 1, tzinfo=UTC))
    (fig,) = (await _one(dsn, "SELECT figures FROM ledger.statements WHERE site = %s", site))[0]
    # The partner's statement: a sale of 60.00 and a refund of 20.00; the top-up is no sale.
    assert (fig["gross"], fig["refunds"]) == (6000, 2000)
    assert fig["revenue_share"] == {"game-cards": 320}
    assert fig["net_payable"] == 6000 - 2000 - 320 - 100000
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await verify(conn) == []
    # The same order id re-sent as paid through the channel is another event: refused.
    await client.xadd(prefix + site, event("order.paid", site, "O1", 6000, funding="channel",
                                           ts=OCT))
    await _drain(w)
    assert await client.xlen(dead_letter_stream(w.consumer.cfg.group)) == 1
    assert (await _balances(dsn))[rules.ESCROW] == 10000


async def test_same_events_twice_change_nothing(dsn, rp):
    await setup_ledger(dsn)
    client, prefix = rp
    book = LicenseBook()
    book.set([license_obj("beta")])
    evs = [event("order.paid", "beta", f"O{i}", 1000 + i) for i in range(30)]
    evs.append(event("order.refunded", "beta", "O3", 1003))
    evs.append(event("withdrawal.requested", "beta", "W1", 500, category=""))
    w = _worker(dsn, rp, book)
    for f in evs:
        await client.xadd(prefix + "beta", f)
    await _drain(w)
    before = await _balances(dsn)
    entries = (await _one(dsn, "SELECT count(*) FROM ledger.entries"))[0][0]
    for f in evs:  # the whole stream delivered again (a re-publishing outbox)
        await client.xadd(prefix + "beta", f)
    await _drain(w)
    assert await _balances(dsn) == before
    assert (await _one(dsn, "SELECT count(*) FROM ledger.entries"))[0][0] == entries
    assert (await _one(dsn, "SELECT count(*) FROM ledger.withdrawals"))[0][0] == 1
    assert await client.xlen(dead_letter_stream(w.consumer.cfg.group)) == 0


async def test_same_id_with_another_amount_is_refused_and_dead_lettered(dsn, rp):
    await setup_ledger(dsn)
    client, prefix = rp
    book = LicenseBook()
    book.set([license_obj("gamma")])
    w = _worker(dsn, rp, book)
    await client.xadd(prefix + "gamma", event("order.paid", "gamma", "O1", 10000))
    await _drain(w)
    before = await _balances(dsn)
    # Same event id (O1:order.paid), another amount: refused, never posted.
    await client.xadd(prefix + "gamma", event("order.paid", "gamma", "O1", 20000))
    await client.xadd(prefix + "gamma", event("order.paid", "gamma", "O2", 700))
    await _drain(w)
    b = await _balances(dsn)
    assert b[rules.ESCROW] == before[rules.ESCROW] + 700
    dead = await client.xrange(dead_letter_stream(w.consumer.cfg.group))
    assert len(dead) == 1
    assert dead[0][1]["amount"] == "20000"
    assert "IdempotencyConflict" in dead[0][1]["dl_error"]
    assert (await _one(dsn, "SELECT key FROM ledger.conflicts")) == [("O1:order.paid",)]


async def test_refund_beyond_payment_is_never_posted(dsn, rp):
    await setup_ledger(dsn)
    client, prefix = rp
    book = LicenseBook()
    book.set([license_obj("delta")])
    w = _worker(dsn, rp, book)
    await client.xadd(prefix + "delta", event("order.paid", "delta", "O1", 1000))
    await client.xadd(prefix + "delta", event("order.refunded", "delta", "O1", 1500))
    await client.xadd(prefix + "delta", event("order.paid", "delta", "O2", 400))
    for _ in range(3):  # the poison entry is retried, then dead-lettered; O2 is posted
        await _drain(w)
        await __import__("asyncio").sleep(0.25)
    await _drain(w)
    b = await _balances(dsn)
    assert b[rules.ESCROW] == 1400
    dead = await client.xrange(dead_letter_stream(w.consumer.cfg.group))
    assert [d[1]["event"] for d in dead] == ["order.refunded"]


async def test_withdrawal_beyond_available_balance_is_voided_at_once(dsn, rp):
    await setup_ledger(dsn)
    client, prefix = rp
    book = LicenseBook()
    book.set([license_obj("eps", shares={"game-cards": "10"})])
    w = _worker(dsn, rp, book)
    await client.xadd(prefix + "eps", event("order.paid", "eps", "O1", 1000))
    await client.xadd(prefix + "eps", event("withdrawal.requested", "eps", "W1", 900,
                                            category=""))  # available is 900: fine
    await client.xadd(prefix + "eps", event("withdrawal.requested", "eps", "W2", 1,
                                            category=""))  # nothing left
    await _drain(w)
    rows = dict(await _one(dsn, "SELECT withdrawal_id, status FROM ledger.withdrawals"))
    assert rows == {"W1": "pending", "W2": "voided"}
    assert (await _balances(dsn))[rules.payable("eps")] == 0


async def test_database_refuses_unbalanced_entries_and_rewrites(dsn):
    """The database, not only the worker, refuses a bad write: an entry whose legs do not
    balance, one without (enough) legs, a leg added to an existing entry, a withdrawal hold
    that overdraws a payable, and any rewrite of history."""
    await setup_ledger(dsn)

    def entry(key: str, kind: str = "sale") -> str:
        # Legs by account name: the ids are looked up in the statement.
        return ("INSERT INTO ledger.entries (key, input_hash, kind, site, currency, amount,"
                " event_at, period_start, leg_accounts, leg_amounts)"
                f" SELECT '{key}', 'h', '{kind}', 's', 'CNY', 5, now(), now(),"
                " array_agg(a.id ORDER BY l.i), array_agg(l.m ORDER BY l.i)"
                " FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS l(n, m, i)"
                " JOIN ledger.accounts a ON a.name = l.n")

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute("INSERT INTO ledger.accounts (name, currency, no_overdraft) VALUES"
                           " ('a', 'CNY', false), ('b', 'CNY', false), ('site:s:payable',"
                           " 'CNY', true), ('u', 'USD', false)")
        await conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            await conn.execute(entry("k1"), (["a", "b"], [5, -4]))
        await conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation, match="entries_legs_declared"):
            await conn.execute(entry("k2"), (["a"], [0]))  # one leg, and a zero one
        await conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation, match="entries_legs_declared"):
            await conn.execute(  # no legs at all
                "INSERT INTO ledger.entries (key, input_hash, kind, site, currency, amount,"
                " event_at, period_start) VALUES ('k2', 'h', 'sale', 's', 'CNY', 5, now(),"
                " now())")
        await conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation, match="does not exist in CNY"):
            await conn.execute(entry("k2"), (["a", "u"], [5, -5]))  # a leg in another currency
        await conn.rollback()
        await conn.execute(entry("k3"), (["a", "b"], [5, -5]))
        await conn.commit()
        rows = await (await conn.execute(
            "SELECT a.name, p.amount FROM ledger.postings p JOIN ledger.accounts a"
            " ON a.id = p.account_id ORDER BY 1")).fetchall()
        assert rows == [("a", 5), ("b", -5)]
        # A leg added later to a balanced entry: refused, however it balances.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only with their entry"):
            await conn.execute("INSERT INTO ledger.postings SELECT max(p.entry_id), a.id, 'CNY',"
                               " 0 FROM ledger.postings p, ledger.accounts a WHERE a.name = 'u'"
                               " GROUP BY a.id")
        await conn.rollback()
        # The partner's payable holds 3 (credit); a hold of 5 would overdraw it.
        await conn.execute(entry("k4"), (["a", "site:s:payable"], [3, -3]))
        await conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation, match="overdraw site:s:payable"):
            await conn.execute(entry("k5", "withdrawal.hold"), (["site:s:payable", "b"], [5, -5]))
        await conn.rollback()
        await conn.execute(entry("k5", "withdrawal.hold"), (["site:s:payable", "b"], [3, -3]))
        await conn.commit()
        for sql in ("UPDATE ledger.postings SET amount = amount * 2",
                    "DELETE FROM ledger.postings", "UPDATE ledger.entries SET amount = 1",
                    "UPDATE ledger.accounts SET balance = 0", "TRUNCATE ledger.postings"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(sql)
            await conn.rollback()
        assert await verify(conn, check_payments=False) == []


async def test_suspended_license_holds_the_payout_and_resuming_pays_it(dsn, rp, kubectl,
                                                                       kubeconfig):
    await setup_ledger(dsn)
    client, prefix = rp
    site = f"settle-{uuid.uuid4().hex[:6]}"
    lic = license_obj(site, suspended=True)
    lic["metadata"] = {"name": site}
    kubectl("apply", "-f", "-", input=json.dumps(lic))
    kube = Kube.from_environment(kubeconfig)
    try:
        book = LicenseBook(kube, ttl=0.0)
        w = _worker(dsn, rp, book)
        await client.xadd(prefix + site, event("order.paid", site, "O1", 10000))
        await client.xadd(prefix + site, event("withdrawal.requested", site, "W1", 5000,
                                               category=""))
        await _drain(w)
        await w.housekeeping()
        assert (await _one(dsn, "SELECT status FROM ledger.withdrawals"))[0][0] == "held"
        # The hold reduced the available balance at once, though nothing was paid.
        assert (await _balances(dsn))[rules.payable(site)] == -(9200 - 5000)
        await w.housekeeping()
        assert (await _one(dsn, "SELECT status FROM ledger.withdrawals"))[0][0] == "held"
        # A payout hold (annotation) keeps holding after the spec is resumed...
        kubectl("patch", "license", site, "--type=merge", "-p", json.dumps({
            "spec": {"suspended": False},
            "metadata": {"annotations": {"hold.kameng.io/payout": '{"reason":"check"}'}}}))
        await w.housekeeping()
        assert (await _one(dsn, "SELECT status FROM ledger.withdrawals"))[0][0] == "held"
        # ...and releasing it pays.
        kubectl("annotate", "license", site, "hold.kameng.io/payout-")
        await w.housekeeping()
        assert (await _one(dsn, "SELECT status, provider_ref IS NOT NULL FROM"
                                " ledger.withdrawals"))[0] == ("paid", True)
        b = await _balances(dsn)
        assert b[rules.withdrawals(site)] == 0
        assert b[rules.ESCROW] == 5000
    finally:
        await kube.close()
        kubectl("delete", "license", site, "--wait=false", check=False)


async def test_statement_with_two_categories_and_a_base_fee_matches_the_hand_computed(dsn, rp):
    await setup_ledger(dsn)
    client, prefix = rp
    site = "hand"
    book = LicenseBook()
    # 8 % on game-cards, 12.5 % on mobile-topup; 9 999.99 a year, weekly statements.
    book.set([license_obj(site, shares={"game-cards": "8", "mobile-topup": "12.5"},
                          fee="9999.99", period="Weekly")])
    week = datetime(2026, 10, 12, 9, tzinfo=UTC)  # a Monday
    sales = [("A", 12345, "game-cards"), ("B", 6789, "game-cards"),
             ("C", 9999, "mobile-topup"), ("D", 101, "mobile-topup")]
    for oid, amt, cat in sales:
        await client.xadd(prefix + site, event("order.paid", site, oid, amt, cat, ts=week))
    await client.xadd(prefix + site, event("order.refunded", site, "C", 3333, ts=week))
    w = _worker(dsn, rp, book)
    await _drain(w)
    await w.housekeeping(now=datetime(2026, 10, 19, tzinfo=UTC))
    (fig,) = (await _one(dsn, "SELECT figures FROM ledger.statements"))[0]
    # By hand, to the fen:
    #   game-cards: 12345 × 8 % = 987.6 → 988; 6789 × 8 % = 543.12 → 543; total 1531
    #   mobile-topup: 9999 × 12.5 % = 1249.875 → 1250; 101 × 12.5 % = 12.625 → 13;
    #     refund of 3333 of C gives back 1250 × 3333 / 9999 = 416.67 → 417; total 846
    #   base fee: 999999 × 7 / 365 = 19178.06 → 19178
    #   net = 29234 − 3333 − 1531 − 846 − 19178 = 4346
    assert fig["gross"] == 29234
    assert fig["refunds"] == 3333
    assert fig["revenue_share"] == {"game-cards": 1531, "mobile-topup": 846}
    assert fig["base_fee"] == 19178
    assert fig["net_payable"] == 4346
    assert fig["closing"] == 4346
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await verify(conn, check_payments=False) == []
    # A late event for the closed week lands in the next one as an adjustment.
    await client.xadd(prefix + site, event("order.paid", site, "E", 1000, ts=week))
    await _drain(w)
    rows = await _one(dsn, "SELECT period_start, adjustment FROM ledger.entries"
                           " WHERE order_id = 'E'")
    assert rows == [(datetime(2026, 10, 19, tzinfo=UTC), True)]
    await w.housekeeping(now=datetime(2026, 10, 26, tzinfo=UTC))
    figs = await _one(dsn, "SELECT figures FROM ledger.statements ORDER BY period_start")
    assert figs[1][0]["adjustments"] == 920
    assert figs[1][0]["opening"] == 4346


async def test_kubectl_kameng_statement_prints_the_closed_statement_as_csv(
        dsn, rp, kubectl, kubeconfig):
    import subprocess
    import sys
    from pathlib import Path

    await setup_ledger(dsn)
    client, prefix = rp
    site = f"stmt-{uuid.uuid4().hex[:6]}"
    lic = license_obj(site, shares={"game-cards": "10"}, fee="0")
    lic["metadata"] = {"name": site}
    kubectl("apply", "-f", "-", input=json.dumps(lic))
    try:
        book = LicenseBook()
        book.set([license_obj(site, shares={"game-cards": "10"}, fee="0")])
        w = _worker(dsn, rp, book)
        await client.xadd(prefix + site, event("order.paid", site, "O1", 12345, ts=OCT))
        await _drain(w)
        await w.housekeeping(now=datetime(2026, 11, 1, tzinfo=UTC))
        plugin = Path(sys.executable).parent / "kubectl-kameng"
        # The CLI as a person runs it (blocking is fine in this test).
        out = subprocess.run([str(plugin), "statement", site,  # noqa: ASYNC221
                              "--period", "2026-10-20", "--dsn", dsn],
                             capture_output=True, text=True, timeout=60,
                             env={"KUBECONFIG": kubeconfig, "PATH": "/usr/bin:/bin"},
                             check=False)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == f"{site},period,2026-10-01,2026-11-01,closed".replace(
            f"{site},", f"site,{site},")
        assert "gross,123.45" in lines
        assert "revenue_share:game-cards,12.35" in lines
        assert "net_payable,111.10" in lines
        assert "O1,game-cards,123.45,0.00,12.35,111.10" in lines
    finally:
        kubectl("delete", "license", site, "--wait=false", check=False)


async def test_a_dead_letter_raises_an_event_on_the_license(dsn, rp, kubectl, kubeconfig):
    import asyncio

    await setup_ledger(dsn)
    client, prefix = rp
    site = f"dead-{uuid.uuid4().hex[:6]}"
    lic = license_obj(site)
    lic["metadata"] = {"name": site}
    kubectl("apply", "-f", "-", input=json.dumps(lic))
    kube = Kube.from_environment(kubeconfig)
    try:
        w = _worker(dsn, rp, LicenseBook(kube, ttl=0.0))
        await client.xadd(prefix + site, event("order.refunded", site, "NOPE", 100))
        for _ in range(4):  # delivered, retried once (max_deliveries=2), dead-lettered
            await w.consumer.step()
            await asyncio.sleep(0.25)
        assert await client.xlen(dead_letter_stream(w.consumer.cfg.group)) == 1
        out = kubectl("get", "events", "-n", "default", "-o", "json",
                      "--field-selector", f"involvedObject.name={site}").stdout
        reasons = [e["reason"] for e in json.loads(out)["items"]]
        assert "SettlementDeadLetter" in reasons
    finally:
        await kube.close()
        kubectl("delete", "license", site, "--wait=false", check=False)


async def test_read_ahead_batches_are_decoded_early_and_post_exactly_once(dsn, rp):
    """The worker decodes and hashes the read-ahead batch while the current one is in
    PostgreSQL (the throughput of issue 9). Events decoded early must post exactly as the
    others: a conflicting duplicate is still refused, an undecodable entry still ends in
    the dead letters, and nothing is posted twice or left behind."""
    await setup_ledger(dsn)
    client, prefix = rp
    book = LicenseBook()
    book.set([license_obj("eta")])
    cfg = ConsumerConfig(group=f"settle-{prefix}", consumer="ahead", prefix=prefix, batch=5,
                         block_ms=20, claim_idle_ms=200, claim_seconds=0.0,
                         discover_seconds=0.0, trim_seconds=3600.0, max_deliveries=1,
                         prefetch=True)
    w = Settlement(dsn, client, book,
                   SandboxPayoutProvider(lambda: psycopg.AsyncConnection.connect(dsn)), cfg)
    early: list[str] = []
    prepare = w.consumer.prepare
    assert prepare is not None, "the settlement worker decodes its read-ahead batches"

    def spy(batch):
        prepare(batch)
        early.extend(e.id for e in batch)
    w.consumer.prepare = spy
    stream = prefix + "eta"
    for i in range(40):
        await client.xadd(stream, event("order.paid", "eta", f"O{i}", 100 + i))
    await client.xadd(stream, {"v": "1", "event": "order.paid"})  # undecodable
    await client.xadd(stream, event("order.paid", "eta", "O7", 99_999))  # same id, other amount
    for i in range(40, 60):
        await client.xadd(stream, event("order.paid", "eta", f"O{i}", 100 + i))
    for _ in range(3):
        await _drain(w)
        await __import__("asyncio").sleep(0.25)
    assert len(early) >= 40, "read-ahead batches were decoded ahead of their turn"
    assert w._ready == {}, "every entry decoded early was handled"
    b = await _balances(dsn)
    assert b[rules.ESCROW] == sum(100 + i for i in range(60))
    assert (await _one(dsn, "SELECT count(*) FROM ledger.entries"))[0][0] == 60
    dead = await client.xrange(dead_letter_stream(w.consumer.cfg.group))
    assert sorted(d[1].get("amount", "") for d in dead) == ["", "99999"]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert await verify(conn, check_payments=False) == []
