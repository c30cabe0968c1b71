"""The withdrawal rule on real PostgreSQL at its boundary: exactly the balance is
accepted, one fen more is refused, and a refusal changes nothing."""

from __future__ import annotations

import redis.asyncio as aioredis

from kameng.contracts.events import orders_stream
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.config import Settings
from kameng_storefront.crypto import DataCipher
from kameng_storefront.db import open_pool
from kameng_storefront.shop.balance import finance_overview, request_withdrawal
from kameng_storefront.state import AppState
from tests.support.storefront import temp_database


async def test_withdrawal_of_exactly_the_balance_and_one_fen_more(pg_admin_dsn, redis_url):
    with temp_database(pg_admin_dsn, "wdedge") as dsn:
        settings = Settings(mode="subsite", site=SiteConfig(site="wdedge"), database_url=dsn,
                            redis_url=redis_url, session_secret="s",
                            data_keys=DataCipher.generate_spec("k"), public_url="http://t",
                            min_withdrawal_fen=100)
        state = AppState(settings=settings, cipher=DataCipher(settings.data_keys))
        state.pool = await open_pool(dsn, "subsite", min_size=1, max_size=2)
        state.redis = aioredis.from_url(redis_url, decode_responses=True)
        try:
            async with state.pool.connection() as conn:
                # Margin 333 fen on a delivered order; a refunded and a paid order add none.
                for oid, status in (("E1", "delivered"), ("E2", "refunded"), ("E3", "paid")):
                    await conn.execute(
                        "INSERT INTO orders (id, product_id, category, unit_cost_fen, price_fen,"
                        " amount_fen, contact_enc, contact_hash, status)"
                        " VALUES (%s, 'g1', 'game', 667, 1000, 1000, 'x', 'h', %s)",
                        (oid, status),
                    )
            assert (await finance_overview(state))[0] == 333
            over = await request_withdrawal(state, 334, "fin@x")
            assert (over.id, over.refused) == (None, "exceeds_balance")
            assert await finance_overview(state) == (333, [])  # a refusal records nothing
            exact = await request_withdrawal(state, 333, "fin@x")
            assert exact.refused is None
            assert exact.id is not None
            balance, withdrawals = await finance_overview(state)
            assert balance == 0
            assert [(w["id"], w["amount_fen"]) for w in withdrawals] == [(exact.id, 333)]
            # Nothing left: even the minimum is refused now.
            assert (await request_withdrawal(state, 100, "fin@x")).refused == "exceeds_balance"
            # A rejected withdrawal gives its amount back.
            async with state.pool.connection() as conn:
                await conn.execute("UPDATE withdrawals SET status = 'rejected' WHERE id = %s",
                                   (exact.id,))
            assert (await finance_overview(state))[0] == 333
        finally:
            await state.redis.delete(orders_stream("wdedge"))
            await state.redis.aclose()
            await state.pool.close()
