"""Settlement benchmark: order events posted per second by ONE worker process, with
PostgreSQL's own ``pgbench`` TPS measured in the same run as the denominator, and the lag
from ``XADD`` to posted (p50/p99) at a steady offered rate.

    eval "$(hack/devenv up)" && python -m bench.settlement_bench [--events 40000]

Throughput: the streams are filled first, then one `kameng settlement` process drains
them; events/s = entries posted after the first commit / wall time from that commit to
the last (so the process's start-up is out and every batch's whole cost is in).
Lag: events are offered at ``--rate`` per second with ``ts`` = XADD time;
lag = posted_at − ts per entry.
Prints the figures; not a timed test. Target: events/s ≥ 3 × pgbench TPS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis.asyncio as aioredis

from bench.storefront_bench import pgbench_tps
from kameng.kube.client import Kube
from tests.support.ledger import event, license_obj, setup_ledger
from tests.support.storefront import temp_database

BIN = Path(sys.executable).parent


async def _fill(r: aioredis.Redis, prefix: str, sites: list[str], n: int, start: int) -> None:
    for i in range(start, start + n, 1000):
        async with r.pipeline(transaction=False) as p:
            for j in range(i, min(i + 1000, start + n)):
                s = sites[j % len(sites)]
                p.xadd(prefix + s, event("order.paid", s, f"O{j}", 1000 + j % 997,
                                         "game-cards" if j % 2 else "mobile-topup"))
            await p.execute()


async def _posted(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return (await (await conn.execute("SELECT count(*) FROM ledger.entries")).fetchone())[0]


async def run(args: argparse.Namespace, admin_dsn: str, redis_url: str) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    prefix = f"kbench:{tag}:orders:"
    sites = [f"bench-{tag}-{i}" for i in range(args.sites)]
    kube = Kube.from_environment()
    for s in sites:
        await kube.apply({**license_obj(s), "metadata": {"name": s}})
    r = aioredis.from_url(redis_url, decode_responses=True)
    figures: dict[str, float] = {}
    try:
        with temp_database(admin_dsn, "settle_bench") as dsn:
            await setup_ledger(dsn)
            await _fill(r, prefix, sites, args.events, 0)
            # --profile: the worker runs under py-spy (a flame graph of where its time goes).
            spy = ([str(BIN / "py-spy"), "record", "--idle", "-r", "200", "-o", args.profile,
                    "-f", args.profile_format, "--"] if args.profile else [])
            worker = subprocess.Popen(  # noqa: ASYNC220  (a process of its own is the point)
                [*spy, str(BIN / "kameng"), "settlement", "--dsn", dsn, "--redis", redis_url,
                 "--stream-prefix", prefix, "--batch", str(args.batch)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                # Wall clock from the first commit seen to the last: the start-up (imports,
                # migrations) stays out, every batch's whole cost (read, parse, post,
                # commit, ack) is in. posted_at would not do: it is taken row by row
                # inside a statement, so one huge batch would look infinitely fast.
                deadline = time.monotonic() + 600
                first = 0
                while (first := await _posted(dsn)) == 0:
                    assert time.monotonic() < deadline, "worker posted nothing"
                    await asyncio.sleep(0.02)
                t_first = time.monotonic()
                while await _posted(dsn) < args.events:
                    assert time.monotonic() < deadline, "worker did not drain the streams"
                    await asyncio.sleep(0.02)
                elapsed = time.monotonic() - t_first
                figures["events_per_s"] = (args.events - first) / max(elapsed, 1e-6)
                # Lag at a steady offered rate.
                n, start = int(args.rate * args.lag_seconds), args.events
                t0 = time.monotonic()
                for k in range(0, n, max(args.rate // 10, 1)):
                    async with r.pipeline(transaction=False) as p:
                        for j in range(start + k, start + min(k + max(args.rate // 10, 1), n)):
                            s = sites[j % len(sites)]
                            p.xadd(prefix + s, event("order.paid", s, f"O{j}", 500,
                                                     ts=datetime.now(UTC)))
                        await p.execute()
                    await asyncio.sleep(max(0.0, t0 + (k / args.rate) + 0.1 - time.monotonic()))
                while await _posted(dsn) < args.events + n:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                async with await psycopg.AsyncConnection.connect(dsn) as conn:
                    p50, p99 = await (await conn.execute(
                        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d),"
                        " percentile_cont(0.99) WITHIN GROUP (ORDER BY d) FROM"
                        " (SELECT extract(epoch FROM posted_at - event_at) * 1000 AS d"
                        "  FROM ledger.entries WHERE id > %s) t", (args.events,))).fetchone()
                figures["lag_p50_ms"], figures["lag_p99_ms"] = float(p50), float(p99)
            finally:
                # py-spy writes its profile on SIGINT (a SIGTERM would lose it).
                worker.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
                worker.wait(timeout=20)
    finally:
        async for key in r.scan_iter(match=f"kbench:{tag}:*"):
            await r.delete(key)
        await r.aclose()
        for s in sites:
            from kameng.kube.client import path_for
            await kube.delete(path_for("kameng.io/v1alpha1", "License", s))
        await kube.close()
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rate", type=int, default=1000, help="events/s offered in the lag phase")
    ap.add_argument("--lag-seconds", type=float, default=5)
    ap.add_argument("--pgbench-seconds", type=int, default=10)
    ap.add_argument("--profile", help="write a py-spy profile of the worker to this file")
    ap.add_argument("--profile-format", default="speedscope",
                    help="py-spy output format (speedscope, flamegraph, raw)")
    args = ap.parse_args()
    admin_dsn, redis_url = os.environ.get("KAMENG_PG_ADMIN_DSN"), os.environ.get("KAMENG_REDIS_URL")
    if not admin_dsn or not redis_url:
        print('run `eval "$(hack/devenv up)"` first (KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL)')
        return 2
    tps = pgbench_tps(admin_dsn, args.pgbench_seconds)
    f = asyncio.run(run(args, admin_dsn, redis_url))
    ratio = f["events_per_s"] / tps
    print(f"pgbench TPS (same run):          {tps:10.0f}")
    print(f"events posted/s (one worker):    {f['events_per_s']:10.0f}  ({ratio:.1f}× pgbench; "
          f"target ≥ 3×)")
    print(f"XADD→posted lag at {args.rate}/s:     p50 {f['lag_p50_ms']:.0f} ms, "
          f"p99 {f['lag_p99_ms']:.0f} ms")
    return 0 if ratio >= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
