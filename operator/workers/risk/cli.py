"""`kameng risk`: run the risk worker, or backtest a policy.

``kameng risk run`` reads RiskPolicies and Licenses from the Kubernetes API (KUBECONFIG or
the pod's service account) and every ``kameng:orders:<site>`` stream from Redis
(``KAMENG_REDIS_URL``, from a Secret: never a flag, so it stays out of process listings),
and stores every outcome in HQ's PostgreSQL (``KAMENG_HQ_DATABASE_URL``, likewise).
``kameng risk backtest <policy> --since 7d`` replays the stored decisions through the
policy as it is now in the cluster (or ``--file policy.yaml``) and prints both columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from typing import Any

from kameng.contracts.events import ORDERS_PREFIX

from ..streams import SETTLEMENT_GROUP, add_trim_after, groups_of
from .policy import parse_duration

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="risk_command", required=True)
    r = sub.add_parser("run", help="run one replica of the risk worker")
    r.add_argument("--metrics-port", type=int,
                   default=int(os.environ.get("KAMENG_METRICS_PORT", "8080")),
                   help="port of /metrics (0 disables)")
    r.add_argument("--refresh-seconds", type=float,
                   default=float(os.environ.get("KAMENG_RISK_REFRESH_SECONDS", "10")),
                   help="how often policies and licenses are re-read")
    r.add_argument("--batch", type=int, default=int(os.environ.get("KAMENG_RISK_BATCH", "400")))
    r.add_argument("--claim-idle-ms", type=int,
                   default=int(os.environ.get("KAMENG_RISK_CLAIM_IDLE_MS", "15000")),
                   help="pending entries idle this long are taken over from a dead replica")
    r.add_argument("--no-kube", action="store_true",
                   help="policies from --policy-file only; no escalation (benchmarks)")
    r.add_argument("--policy-file", action="append", default=[],
                   help="a RiskPolicy YAML to use besides (or, with --no-kube, instead of) "
                   "the cluster's")
    r.add_argument("--prefix", default=os.environ.get("KAMENG_RISK_STREAM_PREFIX",
                                                      ORDERS_PREFIX),
                   help="stream prefix to consume (default: %(default)s; tests and "
                   "benchmarks use their own)")
    add_trim_after(r, SETTLEMENT_GROUP)
    r.add_argument("-v", "--verbose", action="store_true")
    v = sub.add_parser("review", help="a reviewer allows or blocks an order (recorded "
                       "with who and when; a blocked paid order is refunded by the shop)")
    v.add_argument("site")
    v.add_argument("order")
    v.add_argument("action", choices=("allow", "block"))
    v.add_argument("--by", required=True, help="the reviewer")
    v.add_argument("--note", required=True, help="why (kept with the verdict)")
    z = sub.add_parser("snooze", help="act on nothing for one customer or IP for a while "
                       "(hits are still stored)")
    z.add_argument("key", choices=("customer", "ip"))
    z.add_argument("value", help="the hashed value as in the events")
    z.add_argument("--for", dest="duration", default="7d", help="7d, 24h, 30m")
    z.add_argument("--by", required=True)
    z.add_argument("--reason", required=True, help="why (kept with the snooze)")
    q = sub.add_parser("queue", help="orders under review or frozen, not yet reviewed")
    q.add_argument("--site", default="")
    q.add_argument("--action", choices=("review", "freeze"), default="")
    q.add_argument("--newer-than", default="", help="30m, 24h, 7d")
    q.add_argument("--older-than", default="", help="30m, 24h, 7d")
    b = sub.add_parser("backtest", help="replay stored events through a policy")
    b.add_argument("policy", help="RiskPolicy name (or the name in --file)")
    b.add_argument("--since", default="7d", help="how far back: 7d, 24h, 30m")
    b.add_argument("--file", help="a RiskPolicy YAML (a version not applied yet)")
    b.add_argument("--all", action="store_true", help="print every event, not only changes")


def since_seconds(text: str) -> int:
    if text.endswith("d") and text[:-1].isdigit():
        return int(text[:-1]) * 86400
    return parse_duration(text)


def _redis() -> Any:
    import redis.asyncio as aioredis

    url = os.environ.get("KAMENG_REDIS_URL", "")
    if not url:
        raise SystemExit("KAMENG_REDIS_URL is required")
    # Replies decoded by the parser (hiredis, in C): stream entries arrive as str, and
    # decoding every field in Python cost a tenth of the worker's CPU.
    return aioredis.from_url(url, socket_connect_timeout=5, decode_responses=True)


def _dsn() -> str:
    dsn = os.environ.get("KAMENG_HQ_DATABASE_URL", "")
    if not dsn:
        raise SystemExit("KAMENG_HQ_DATABASE_URL is required (risk outcomes live in HQ's "
                         "database)")
    return dsn


def _load_file(path: str) -> Any:
    import yaml

    from .policy import compile_policy

    with open(path, encoding="utf-8") as fh:
        obj = yaml.safe_load(fh)
    md = obj.get("metadata") or {}
    return compile_policy(md.get("name", "file"), obj.get("spec") or {},
                          int(md.get("generation", 0)))


async def _run(args: argparse.Namespace) -> int:
    from kameng.kube.client import Kube

    from ..streams import ConsumerConfig
    from .escalation import Escalation
    from .source import KubeSource
    from .store import RiskStore
    from .worker import GROUP, Policies, RiskWorker

    redis = _redis()
    store = RiskStore(_dsn())
    kube = None if args.no_kube else Kube.from_environment()
    files = [_load_file(p) for p in args.policy_file]
    for cp in files:
        for e in cp.errors:
            log.error("rule does not compile: %s", e)
    policies = Policies(policies=list(files))
    source = KubeSource(kube) if kube else None
    worker = RiskWorker(redis, policies, store,
                        # prefetch + overlap: reading batch N+1, and deciding it, run
                        # while batch N is stored and published (the worker was half idle
                        # waiting on one round trip after the other).
                        ConsumerConfig(group=GROUP, batch=args.batch, prefix=args.prefix,
                                       claim_idle_ms=args.claim_idle_ms, prefetch=True,
                                       overlap=True, overlap_depth=2,
                                       required_groups=(GROUP, *groups_of(args.trim_after)),
                                       background_discovery=True),
                        escalation=Escalation(redis, kube))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def refresh() -> None:
        while not stop.is_set():
            try:
                if source is not None:
                    await source.refresh(policies)
                    policies.policies = sorted([*policies.policies, *files],
                                               key=lambda p: p.name)
            except Exception as exc:  # keep the last policies; retry next round
                log.warning("could not refresh policies: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.refresh_seconds)

    if source is not None:
        await source.refresh(policies)  # start deciding only with the policies loaded
        policies.policies = sorted([*policies.policies, *files], key=lambda p: p.name)
    task = asyncio.create_task(refresh())
    # Everything loaded so far (modules, compiled policies) lives as long as the process:
    # out of the collector's way. A batch allocates thousands of short-lived, acyclic
    # dicts and lists (freed by reference counting), so the default gen-0 threshold of
    # 700 ran a collection every few events for nothing: a tenth of the worker's CPU.
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    log.info("risk worker running", extra={"policies": [p.name for p in policies.policies]})
    try:
        await worker.run(stop)
    finally:
        stop.set()
        await task
        await redis.aclose()
        if kube is not None:
            await kube.close()
    return 0


async def _backtest(args: argparse.Namespace) -> int:
    from psycopg import AsyncConnection

    from kameng.api.common import API_VERSION
    from kameng.api.resources import RISKPOLICY
    from kameng.kube.client import Kube, path_for

    from . import backtest
    from .policy import compile_policy
    from .source import KubeSource
    from .worker import Policies

    redis = _redis()
    kube = Kube.from_environment()
    conn = await AsyncConnection.connect(_dsn(), autocommit=True)
    try:
        if args.file:
            policy = _load_file(args.file)
        else:
            obj = await kube.get(path_for(API_VERSION, RISKPOLICY.kind, args.policy))
            if obj is None:
                print(f"RiskPolicy {args.policy!r} not found", file=sys.stderr)
                return 1
            policy = compile_policy(args.policy, obj.get("spec") or {})
        for e in policy.errors:
            print(f"warning: rule {e.rule!r} does not compile: {e.error}", file=sys.stderr)
        ctx = Policies()
        await KubeSource(kube).refresh_licences(ctx)
        since = int((time.time() - since_seconds(args.since)) * 1000)
        rows = await backtest.replay(redis, policy, await backtest.stored_events(conn, since),
                                     ctx.licences)
    finally:
        await conn.close()
        await redis.aclose()
        await kube.close()
    print(f"{'TIME':<20} {'SITE':<16} {'ORDER':<24} {'EVENT':<20} {'DECIDED':<8} "
          f"{'WOULD':<8} RULE")
    for r in rows:
        if args.all or r.decided != r.would:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r.ts / 1000))
            print(f"{ts:<20} {r.site:<16} {r.order_id:<24} {r.event:<20} {r.decided:<8} "
                  f"{r.would:<8} {r.would_rule}")
    print(backtest.summary(rows))
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    if args.risk_command == "run":
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port)
        return asyncio.run(_run(args))
    if args.risk_command in ("review", "snooze", "queue"):
        return asyncio.run(_review(args))
    return asyncio.run(_backtest(args))


async def _review(args: argparse.Namespace) -> int:
    from psycopg import AsyncConnection

    from . import review

    redis = _redis()
    conn = await AsyncConnection.connect(_dsn(), autocommit=True)
    try:
        if args.risk_command == "queue":
            rows = await review.queue(conn, review.QueueFilter(
                site=args.site, action=args.action,
                newer_than=review.parse_age(args.newer_than),
                older_than=review.parse_age(args.older_than)))
            print(f"{'DECIDED':<20} {'SITE':<16} {'ORDER':<28} {'ACTION':<7} {'AMOUNT':>10}"
                  f" {'CUSTOMER':<13} RULES")
            for r in rows:
                rules = ", ".join(f"{h['rule']}" + (" (shadow)" if h["mode"] == "shadow"
                                                    else "") for h in r["hits"])
                print(f"{r['decided_at']:%Y-%m-%dT%H:%M:%S}  {r['site']:<16} "
                      f"{r['order_id']:<28} {r['action']:<7} {r['amount'] / 100:>10.2f} "
                      f"{(r['customer'] or '-')[:12]:<13} {rules}")
            return 0
        if args.risk_command == "snooze":
            until = await review.snooze(conn, redis, args.key, args.value,
                                        since_seconds(args.duration), args.by, args.reason)
            print(f"{args.key} {args.value[:12]}… snoozed until {until:%Y-%m-%dT%H:%M}Z "
                  f"by {args.by}")
            return 0
        res = await review.review(conn, redis, args.site, args.order, args.action, args.by,
                                  args.note)
        rec = res.record
        if res.first:
            print(f"order {args.order}: {args.action} by {args.by}")
            return 0
        print(f"order {args.order} was already reviewed: {rec['action']} by "
              f"{rec['reviewer']} at {rec['reviewed_at']:%Y-%m-%dT%H:%M:%S}Z", file=sys.stderr)
        return 1
    except review.ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await conn.close()
        await redis.aclose()
