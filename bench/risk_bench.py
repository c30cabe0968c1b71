"""Risk worker benchmark on the dev environment's Redis and PostgreSQL.

Measured in one run, on the same Redis:

* the denominator: ``redis-benchmark``'s XADD rate (50 clients, no pipelining, the tool's
  defaults), i.e. how fast this Redis on this machine takes stream entries at all;
* throughput: N order events of the default RiskPolicy's shape (7 velocity features, 11
  rules) pre-filled on one site stream, then one ``kameng risk run`` process started;
  events/s = N / time until the group has read and acknowledged all of them (every
  outcome and hit stored in a fresh HQ database, as in production); with the CPU each
  process spent per event meanwhile (the worker, the Redis server, the worker's
  PostgreSQL backend), so a run that misses the target says where the time went;
* latency at a fixed offered load (half the throughput target, 0.05 × XADD/s, unless
  ``--rate``): events XADDed at that pace while one worker runs, by a producer sending
  every entry due once a millisecond in one pipelined round trip (its achieved rate and
  CPU share are reported: a producer that cannot keep up measures itself, not the worker);
  latency = the stored outcome's ``decided_at`` (stamped when the rules have run, before
  the batch's store and publish round trips) − the entry id's millisecond time (both on
  this machine's clock), p50/p99 over every event.

Targets: throughput ≥ 0.1 × XADD/s per worker process; p99 ≤ 20 ms at half that load.
Usage: python bench/risk_bench.py [--events 20000] [--seconds 20] [--rate R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from kameng.contracts.events import OrderEvent  # noqa: E402

POLICY = ROOT / "manifests" / "samples" / "riskpolicy-default.yaml"
TICK_S = 0.001  # the latency run's producer sends every entry due once a millisecond
PROFILE = ""  # --profile: py-spy's raw stacks of the throughput run's worker


def devenv_url(name: str) -> str:
    url = os.environ.get(name)
    if url:
        return url
    out = subprocess.run([str(ROOT / "hack" / "devenv"), "up"], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(rf"{name}='([^']+)'", out)
    if not m:
        raise SystemExit(f"no {name} and hack/devenv up printed none")
    return m.group(1)


def xadd_rate(url: str, requests: int) -> float:
    u = urlparse(url)
    key = f"bench:xadd:{uuid.uuid4().hex[:8]}"
    cmd = ["redis-benchmark", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379),
           "-n", str(requests), "-q", "XADD", key, "*", "event", "order.paid",
           "amount", "5000"]
    env = {**os.environ}
    if u.password:
        # This redis-benchmark reads no REDISCLI_AUTH: the dev environment's loopback
        # password goes on its command line for the few seconds it runs.
        cmd[1:1] = ["-a", u.password]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if proc.returncode:  # the message, never the command line (it holds the password)
        raise SystemExit(f"redis-benchmark failed: {proc.stderr[-500:]}")
    out = proc.stdout
    try:
        m = re.findall(r"([0-9.]+) requests per second", out)
        return float(m[-1])
    finally:
        import redis

        redis.Redis.from_url(url).delete(key)


def event(site: str, i: int, tag: str) -> dict[str, str]:
    # Normal-looking traffic over 500 customers and 200 IPs: every feature is read and
    # recorded, every rule evaluated.
    kind = ("order.created", "order.paid", "order.paid", "topup")[i % 4]
    return OrderEvent.for_order(kind, site=site, order_id=f"b{tag}-{i}",
                                customer=f"c{tag}-{i % 500}", ip=f"i{tag}-{i % 200}",
                                category="game-cards", region="CN-BJ",
                                amount=1000 + (i % 50) * 100).to_fields()


def start_worker(url: str, dsn: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KAMENG_REDIS_URL": url, "KAMENG_HQ_DATABASE_URL": dsn}
    # --profile: the worker runs under py-spy (raw stacks: where its time goes).
    spy = ([str(Path(sys.executable).parent / "py-spy"), "record", "--idle", "-r", "200",
            "-f", "raw", "-o", PROFILE, "--"] if PROFILE else [])
    return subprocess.Popen(
        [*spy, sys.executable, "-m", "kameng.cli.main", "risk", "run", "--no-kube",
         "--metrics-port", "0", "--policy-file", str(POLICY), "--prefix", prefix],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def acked(r: aioredis.Redis, stream: str) -> int:
    try:
        groups = await r.xinfo_groups(stream)
    except Exception:
        return 0
    for g in groups:
        if g["name"] in (b"risk", "risk"):
            read = int(g.get("entries-read") or 0)
            return read - int(g.get("pending", 0))
    return 0


async def throughput(url: str, dsn: str, n: int, log: Path) -> dict[str, Any]:
    r = aioredis.from_url(url)
    tag = uuid.uuid4().hex[:8]
    prefix, site = f"bench:{tag}:orders:", f"bench{tag}"
    stream = prefix + site
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, event(site, i, tag))
        await pipe.execute()
    proc = start_worker(url, dsn, prefix, log)
    try:
        # Start-up (imports, policy) is not counted. Polling Redis is the measurement.
        while await acked(r, stream) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        t0 = time.perf_counter()
        first = await acked(r, stream)
        cpu0 = await cpu_now(r, dsn, None if PROFILE else proc.pid)
        while (done := await acked(r, stream)) < n:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited {proc.returncode}; see {log}")
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        cpu1 = await cpu_now(r, dsn, None if PROFILE else proc.pid)
    finally:
        # py-spy writes its profile on SIGINT (a SIGTERM would lose it).
        proc.send_signal(signal.SIGINT if PROFILE else signal.SIGTERM)
        proc.wait(30)
        await cleanup(r, tag, site)
        await r.aclose()
    per_event = {k: round((cpu1[k] - cpu0[k]) / (done - first) * 1e6, 1)
                 for k in cpu0 if cpu0[k] is not None and cpu1.get(k) is not None}
    return {"events": n, "seconds": round(elapsed, 3),
            "events_per_s": round((done - first) / elapsed, 1),
            "cpu_us_per_event": per_event}


def _proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a local process (None when not on this machine)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_now(r: aioredis.Redis, dsn: str, worker_pid: int | None
                  ) -> dict[str, float | None]:
    """Where the CPU goes, as seconds so far: the worker process, the Redis server (its
    own INFO) and the worker's PostgreSQL backends (their /proc entries, when the server
    is on this machine): the throughput run reports each per event, so a run that misses
    the target says which process it waited on."""
    import psycopg

    info = await r.info("cpu")
    redis_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")
        pids = [row[0] for row in await cur.fetchall()]
    pg = [_proc_cpu(p) for p in pids]
    return {"worker": _proc_cpu(worker_pid) if worker_pid else None, "redis": redis_s,
            "postgres": sum(x for x in pg if x is not None) if pg and None not in pg
            else None}


async def latency(url: str, dsn: str, rate: float, seconds: float, log: Path
                  ) -> dict[str, Any]:
    r = aioredis.from_url(url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    prefix, site = f"bench:{tag}:orders:", f"bench{tag}"
    stream = prefix + site
    await r.xadd(stream, event(site, -1, tag))  # the worker joins the stream
    proc = start_worker(url, dsn, prefix, log)
    ids: list[tuple[str, str]] = []
    try:
        while await acked(r, stream) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        n = int(rate * seconds)
        # Built before the clock starts: the producer's job is only to offer the load.
        batch = [event(site, i, tag) for i in range(n)]
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        sent = 0
        while sent < n:
            # Paced in ticks of TICK_S against the start time: every tick sends, in ONE
            # pipelined round trip, every entry due by now (one awaited XADD at a time
            # could not offer more than ~4,000/s here, less than the load asked for).
            due = min(n, int((time.perf_counter() - t0) * rate) + 1)
            if due > sent:
                async with r.pipeline(transaction=False) as pipe:
                    for fields in batch[sent:due]:
                        pipe.xadd(stream, fields)
                    got = await pipe.execute()
                ids += [(eid, f["event_id"]) for eid, f in zip(got, batch[sent:due],
                                                               strict=True)]
                sent = due
            await asyncio.sleep(TICK_S)
        produced = time.perf_counter() - t0
        producer_cpu = (time.process_time() - cpu0) / produced
        achieved = n / produced
        while await acked(r, stream) < n + 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(10)
    import psycopg

    with psycopg.connect(dsn) as conn:
        decided = dict(conn.execute(
            "SELECT event_id, decided_at FROM risk.decisions WHERE event_id = ANY(%s)",
            ([eid for _, eid in ids],)).fetchall())
    lat = [decided[eid].timestamp() * 1000 - int(entry_id.split("-")[0])
           for entry_id, eid in ids if eid in decided]
    await cleanup(r, tag, site)
    await r.aclose()
    lat.sort()

    def pct(p: float) -> float:
        return float(lat[min(len(lat) - 1, int(p * len(lat)))]) if lat else float("nan")

    return {"offered_per_s": round(rate, 1), "achieved_per_s": round(achieved, 1),
            "producer_cpu_share": round(producer_cpu, 3),
            "events": len(ids), "decided": len(lat), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": float(lat[-1]) if lat else float("nan")}


async def cleanup(r: aioredis.Redis, tag: str, site: str) -> None:
    for pattern in (f"bench:{tag}:*", f"kameng:risk:d:b{tag}-*", f"kameng:risk:v:*{tag}*",
                    f"kameng:decisions:{site}", f"kameng:risk:esc:{site}:*"):
        keys = [k async for k in r.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 500):
            await r.delete(*keys[i:i + 500])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="offered load of the latency run (default: 0.05 × XADD/s)")
    ap.add_argument("--requests", type=int, default=100000, help="redis-benchmark -n")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", default="",
                    help="write py-spy's raw stacks of the throughput run's worker here")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    from tests.support.risk import hq_database

    url = devenv_url("KAMENG_REDIS_URL")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"risk-bench-{os.getpid()}.log"
    with hq_database(devenv_url("KAMENG_PG_ADMIN_DSN")) as dsn:
        xadd = xadd_rate(url, args.requests)
        tp = asyncio.run(throughput(url, dsn, args.events, log))
        PROFILE = ""  # the latency run is never profiled
        rate = args.rate or 0.05 * xadd
        lt = asyncio.run(latency(url, dsn, rate, args.seconds, log))
    out = {"redis_benchmark_xadd_per_s": xadd, "throughput": tp, "latency": lt,
           "ratio": round(tp["events_per_s"] / xadd, 3),
           "targets": {"ratio_min": 0.1, "p99_ms_max": 20}}
    print(f"redis-benchmark XADD: {xadd:,.0f}/s")
    print(f"one worker: {tp['events_per_s']:,.0f} events/s "
          f"({out['ratio']} × XADD; target ≥ 0.1); CPU µs per event: "
          + ", ".join(f"{k} {v}" for k, v in tp["cpu_us_per_event"].items()))
    print(f"latency at {lt['achieved_per_s']:,.0f}/s achieved of {lt['offered_per_s']:,.0f}/s "
          f"offered (producer CPU {lt['producer_cpu_share']:.0%}): p50 {lt['p50_ms']:.0f} ms, "
          f"p99 {lt['p99_ms']:.0f} ms, max {lt['max_ms']:.0f} ms (target p99 ≤ 20 ms); "
          f"{lt['decided']}/{lt['events']} decided")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
