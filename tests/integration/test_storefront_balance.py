"""The partner's balance on real PostgreSQL: concurrent withdrawals cannot spend one
balance twice (the advisory lock), and each accepted one leaves its outbox event."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from kameng.contracts.events import orders_stream
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.config import Settings
from kameng_storefront.crypto import DataCipher
from kameng_storefront.db import open_pool
from kameng_storefront.shop.balance import finance_overview, request_withdrawal
from kameng_storefront.state import AppState
from tests.support.storefront import temp_database


async def test_concurrent_withdrawals_share_one_balance(pg_admin_dsn, redis_url):
    with temp_database(pg_admin_dsn, "balance") as dsn:
        settings = Settings(mode="subsite", site=SiteConfig(site="bal"), database_url=dsn,
                            redis_url=redis_url, session_secret="s",
                            data_keys=DataCipher.generate_spec("k"), public_url="http://t",
                            min_withdrawal_fen=100)
        state = AppState(settings=settings, cipher=DataCipher(settings.data_keys))
        state.pool = await open_pool(dsn, "subsite", min_size=10, max_size=10)
        state.redis = aioredis.from_url(redis_url, decode_responses=True)
        try:
            async with state.pool.connection() as conn:
                for i in range(3):  # margin 300 fen each: balance 900
                    await conn.execute(
                        "INSERT INTO orders (id, product_id, category, unit_cost_fen, price_fen,"
                        " amount_fen, contact_enc, contact_hash, status)"
                        " VALUES (%s, 'g1', 'game', 700, 1000, 1000, 'x', 'h', 'delivered')",
                        (f"K{i}",),
                    )
            outcomes = await asyncio.gather(
                *(request_withdrawal(state, 400, "fin@x") for _ in range(20))
            )
            accepted = [o for o in outcomes if o.id is not None]
            assert len(accepted) == 2  # 2 × 400 ≤ 900 < 3 × 400
            assert {o.refused for o in outcomes if o.id is None} == {"exceeds_balance"}
            assert (await request_withdrawal(state, 99, "fin@x")).refused == "below_minimum"
            balance, withdrawals = await finance_overview(state)
            assert balance == 100
            assert len(withdrawals) == 2
            async with state.pool.connection() as conn:
                events = await (await conn.execute(
                    "SELECT count(*) AS n FROM event_outbox"
                    " WHERE event_id LIKE 'W%%:withdrawal.requested'")).fetchone()
            assert events["n"] == 2
        finally:
            await state.redis.delete(orders_stream("bal"))
            await state.redis.aclose()
            await state.pool.close()
