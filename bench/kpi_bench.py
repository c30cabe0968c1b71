"""KPI benchmark on the dev environment's PostgreSQL and Redis.

Measures what the KPI features cost where they run:
* HQ: one KPI refresh (``kameng_storefront.hq.kpis.compute``: the sales query over
  ``payments`` ⋈ ``card_keys`` ⋈ ``products`` plus the reported days) for S registered sites
  with P paid payments each over 30 days, against the same database's plain
  ``SELECT count(*) FROM payments`` (same run, so the ratio survives a noisy machine);
* shop: one visit count (a pipelined HINCRBY + EXPIRE) against a plain Redis PING round
  trip.

Usage: python bench/kpi_bench.py [--sites 200] [--payments 500] [--visits 2000]
(the environment of ``eval "$(hack/devenv up)"``: KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import redis.asyncio as aioredis

from kameng.contracts.hq_auth import SiteCredential, new_site_api_token, token_digest
from kameng_storefront.crypto import DataCipher
from kameng_storefront.db import open_pool
from kameng_storefront.hq.credentials import CredentialRegistry
from kameng_storefront.hq.kpis import compute
from kameng_storefront.shop.kpis import count_visit
from kameng_storefront.state import AppState
from tests.support.storefront import hq_settings_for, temp_database, write_credential


def _fill(dsn: str, sites: list[str], payments: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO products (id, name_zh, name_en, category, face_value_fen,"
                     " cost_fen) SELECT 'p' || i, 'p', 'p', 'cat' || (i % 8), 100, 90"
                     " FROM generate_series(1, 40) i")
        for s in sites:
            conn.execute(
                "INSERT INTO payments (id, site, order_id, amount_fen, status, notify_url,"
                " return_url, paid_at, kind) SELECT %(s)s || '-' || i, %(s)s, 'o' || i,"
                " 100 + i %% 50, 'paid', 'http://x/', 'http://x/',"
                " now() - (i %% 30) * interval '1 day', 'order'"
                " FROM generate_series(1, %(n)s) i", {"s": s, "n": payments})
            conn.execute(
                "INSERT INTO card_keys (product_id, secret_enc, secret_hash, status, site,"
                " order_ref, sold_at) SELECT 'p' || (1 + i %% 40), 'x', %(s)s || i, 'sold',"
                " %(s)s, 'o' || i, now() FROM generate_series(1, %(n)s) i",
                {"s": s, "n": payments})
        conn.execute("ANALYZE")


async def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument("--payments", type=int, default=500)
    ap.add_argument("--visits", type=int, default=2000)
    args = ap.parse_args()
    admin, redis_url = os.environ["KAMENG_PG_ADMIN_DSN"], os.environ["KAMENG_REDIS_URL"]
    sites = [f"b{i:04d}" for i in range(args.sites)]
    with tempfile.TemporaryDirectory() as tmp, temp_database(admin, "kameng_kpibench") as dsn:
        creds = Path(tmp)
        for s in sites:
            write_credential(creds, SiteCredential(
                site=s, sha256=token_digest(new_site_api_token()), createdAt="2026-01-01T00:00:00Z",
                state="active", urls=[]))
        settings = hq_settings_for(dsn, redis_url, "http://127.0.0.1", "", creds)
        state = AppState(settings=settings, cipher=DataCipher(settings.data_keys))
        state.credentials = CredentialRegistry(str(creds))
        state.pool = await open_pool(dsn, "hq", max_size=4)
        _fill(dsn, sites, args.payments)
        board = await compute(state)
        assert len(board.sites) == args.sites
        assert sum(k.orders for k in board.sites) == args.sites * args.payments

        async def count() -> None:
            async with state.pool.connection() as conn:
                await conn.execute("SELECT count(*) FROM payments")

        refresh = await _time(lambda: compute(state), 5)
        base = await _time(count, 5)
        await state.pool.close()

        shop = AppState(settings=settings, cipher=state.cipher)
        shop.redis = aioredis.from_url(redis_url, decode_responses=True)
        visit = await _time(lambda: count_visit(shop, "bench", f"cat{secrets.randbelow(8)}"),
                            args.visits)
        ping = await _time(shop.redis.ping, args.visits)
        await shop.redis.delete(*[k async for k in shop.redis.scan_iter("site:hq:kpi:*")])
        await shop.redis.aclose()
    rows = args.sites * args.payments
    print(f"HQ KPI refresh, {args.sites} sites x {args.payments} payments ({rows} rows):"
          f" {refresh * 1000:.0f} ms; SELECT count(*) FROM payments: {base * 1000:.1f} ms;"
          f" ratio {refresh / base:.1f}")
    print(f"shop visit count: {visit * 1e6:.0f} us; Redis PING: {ping * 1e6:.0f} us;"
          f" ratio {visit / ping:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
