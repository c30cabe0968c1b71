"""`kameng settlement`: run one replica of the settlement worker."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal

from kameng.contracts.events import ORDERS_PREFIX
from kameng.workers.streams import RISK_GROUP, ConsumerConfig, add_trim_after, groups_of


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", default=os.environ.get("KAMENG_HQ_DATABASE_URL", ""),
                   help="HQ's PostgreSQL (the ledger lives there); env KAMENG_HQ_DATABASE_URL")
    p.add_argument("--redis", default=os.environ.get("KAMENG_REDIS_URL", ""),
                   help="Redis URL; env KAMENG_REDIS_URL")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                   help="kubeconfig (in-cluster config when unset)")
    p.add_argument("--batch", type=int, default=500, help="events per ledger transaction")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("KAMENG_METRICS_PORT",
                                                                           "0")),
                   help="Prometheus metrics port (0: off)")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between payout and statement rounds")
    p.add_argument("--claim-idle-ms", type=int, default=15_000,
                   help="a pending entry idle this long is taken over from its replica")
    p.add_argument("--stream-prefix", default=ORDERS_PREFIX,
                   help="streams read: <prefix><site> (tests and benchmarks isolate by it)")
    add_trim_after(p, RISK_GROUP)
    p.add_argument("--payout-limit-fen", type=int, default=5_000_000_00,
                   help="sandbox payout provider: refuse transfers above this")


async def _main(args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis
    from prometheus_client import start_http_server
    from psycopg import AsyncConnection, OperationalError

    from kameng.kube.client import Kube
    from kameng.ledger.repo import migrate
    from kameng.payouts import SandboxPayoutProvider
    from kameng.workers.settlement.licenses import LicenseBook
    from kameng.workers.settlement.worker import GROUP, Settlement

    if not args.dsn or not args.redis:
        raise SystemExit("kameng settlement: --dsn and --redis are required")
    # HQ's database away at start (a restart, a failover): wait for it here, rather than
    # exit and leave Kubernetes' crash-loop back-off (up to 5 minutes) to decide when the
    # ledger moves again.
    delay = 1.0
    while True:
        try:
            async with await AsyncConnection.connect(args.dsn, connect_timeout=10) as conn:
                await migrate(conn)
                await SandboxPayoutProvider.setup(conn)
            break
        except OperationalError as exc:
            logging.getLogger("kameng.settlement").warning(
                "HQ's database unavailable at start; retrying in %.0f s", delay,
                extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    if args.metrics_port:
        start_http_server(args.metrics_port)
    kube = Kube.from_environment(args.kubeconfig)
    redis = aioredis.from_url(args.redis, decode_responses=True)
    worker = Settlement(
        args.dsn, redis, LicenseBook(kube),
        SandboxPayoutProvider(lambda: AsyncConnection.connect(args.dsn), args.payout_limit_fen),
        ConsumerConfig(group=GROUP, batch=args.batch, claim_idle_ms=args.claim_idle_ms,
                       prefix=args.stream_prefix, prefetch=True,
                       required_groups=(GROUP, *groups_of(args.trim_after))),
        interval=args.interval)
    # Profiled (py-spy, bench/settlement_bench.py --profile): a sixth of the worker's CPU
    # went to the cyclic garbage collector, which a batch's thousands of short-lived
    # objects trigger over and over, each full pass walking every object the imports left.
    # Those are frozen (never scanned again) and young collections made rarer; the
    # worker's own objects are acyclic and freed by reference counting anyway.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        await redis.aclose()
        await kube.close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_main(args))
