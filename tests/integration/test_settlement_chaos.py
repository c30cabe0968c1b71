"""The settlement worker killed (SIGKILL) 20 times at random points while 10,000 events
flow, with two replicas running: the ledger ends exactly equal to the money HQ received
(`kameng ledger verify` passes), every event posted once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import redis.asyncio as aioredis

from tests.support.ledger import event, license_obj, setup_ledger
from tests.support.storefront import temp_database

BIN = Path(sys.executable).parent
EVENTS = 10_000
KILLS = 20


def _replica(dsn: str, redis_url: str, kubeconfig: str, prefix: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "kameng"), "settlement", "--dsn", dsn, "--redis", redis_url,
         "--kubeconfig", kubeconfig, "--stream-prefix", prefix, "--claim-idle-ms", "1000",
         "--batch", "200", "--interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})


def test_sigkill_twenty_times_leaves_the_ledger_equal_to_payments(
        pg_admin_dsn, redis_url, kubeconfig, kubectl):
    rnd = random.Random(9)
    tag = uuid.uuid4().hex[:6]
    sites = [f"chaos-{tag}-{i}" for i in range(4)]
    prefix = f"ktest:{tag}:orders:"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {**license_obj(s), "metadata": {"name": s}} for s in sites]}))
    with temp_database(pg_admin_dsn, "chaos") as dsn:
        asyncio.run(setup_ledger(dsn))
        # The events and what HQ's payment channel recorded for them.
        events, payments = [], []
        n = 0
        while len(events) < EVENTS:
            site = sites[n % len(sites)]
            amt = rnd.randint(100, 50_000)
            oid = f"O{n}"
            events.append(event("order.paid", site, oid, amt,
                                rnd.choice(["game-cards", "mobile-topup"])))
            refunded = 0
            if rnd.random() < 0.1 and len(events) < EVENTS:
                refunded = rnd.choice([amt, rnd.randint(1, amt)])
                events.append(event("order.refunded", site, oid, refunded))
            status = "refunded" if refunded == amt else "paid"
            payments.append((f"{site}-{oid}", site, oid, amt, status,
                             refunded if status == "paid" else 0))
            n += 1
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO payments (id, site, order_id, amount_fen, status, refunded_fen,"
                " notify_url, return_url, paid_at) VALUES (%s, %s, %s, %s, %s, %s, '', '',"
                " now())", payments)
        replicas = [_replica(dsn, redis_url, kubeconfig, prefix) for _ in range(2)]

        async def flow() -> None:
            r = aioredis.from_url(redis_url, decode_responses=True)
            try:
                async def produce() -> None:
                    for i in range(0, len(events), 250):
                        async with r.pipeline(transaction=False) as p:
                            for f in events[i:i + 250]:
                                p.xadd(prefix + f["site"], f)
                            await p.execute()
                        # Spread over the kills, so replicas die mid-flow.
                        await asyncio.sleep(0.5)

                async def posted() -> int:
                    async with await psycopg.AsyncConnection.connect(dsn) as c:
                        return (await (await c.execute(
                            "SELECT count(*) FROM ledger.entries")).fetchone())[0]

                async def kill() -> None:
                    for _ in range(KILLS):
                        # A kill at a random point of real work: once the ledger has moved
                        # since the last one (a replica that never got going proves
                        # nothing), then after a random pause.
                        before = await posted()
                        for _ in range(200):
                            if await posted() != before:
                                break
                            await asyncio.sleep(0.1)
                        await asyncio.sleep(rnd.uniform(0.0, 0.8))
                        i = rnd.randrange(len(replicas))
                        replicas[i].send_signal(signal.SIGKILL)
                        replicas[i].wait()
                        replicas[i] = _replica(dsn, redis_url, kubeconfig, prefix)

                await asyncio.gather(produce(), kill())
                deadline = asyncio.get_running_loop().time() + 150
                while True:
                    busy = 0
                    for s in sites:
                        groups = await r.xinfo_groups(prefix + s)
                        if not groups:  # not even joined yet: everything is still to do
                            busy += await r.xlen(prefix + s)
                        for g in groups:
                            busy += int(g["pending"]) + int(g.get("lag") or 0)
                    if not busy:
                        break
                    assert asyncio.get_running_loop().time() < deadline, f"{busy} not settled"
                    await asyncio.sleep(0.5)
            finally:
                async for key in r.scan_iter(match=f"ktest:{tag}:*"):
                    await r.delete(key)
                await r.aclose()

        try:
            asyncio.run(flow())
        finally:
            for p in replicas:
                p.send_signal(signal.SIGTERM)
            for p in replicas:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            kubectl("delete", "license", *sites, "--wait=false", check=False)
        with psycopg.connect(dsn) as conn:
            (entries,) = conn.execute("SELECT count(*) FROM ledger.entries"
                                      " WHERE kind IN ('sale', 'refund')").fetchone()
        assert entries == EVENTS
        out = subprocess.run([str(BIN / "kameng"), "ledger", "verify", "--dsn", dsn],
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
