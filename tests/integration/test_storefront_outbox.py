"""The order outbox on real PostgreSQL and Redis: an event committed by a request is
published by that request or by the periodic flush, racing each other, and reaches the
site's stream exactly once (consumers would drop a duplicate by ``event_id``, but tests
and people counting the stream saw six payments for three)."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as aioredis

from kameng.contracts.events import OrderEvent, orders_stream
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.config import Settings
from kameng_storefront.crypto import DataCipher
from kameng_storefront.db import open_pool
from kameng_storefront.shop.bus import enqueue, flush_outbox, publish_committed
from kameng_storefront.state import AppState
from tests.support.storefront import temp_database

SITE = "outbox-race"
ROUNDS = 60


def _event(i: int) -> OrderEvent:
    return OrderEvent(event="order.paid", event_id=f"O{i}:order.paid", site=SITE,
                      order_id=f"O{i}", amount=100 + i)


async def test_request_and_flush_racing_publish_each_event_once(pg_admin_dsn, redis_url):
    with temp_database(pg_admin_dsn, "outbox") as dsn:
        settings = Settings(mode="subsite", site=SiteConfig(site=SITE), database_url=dsn,
                            redis_url=redis_url, session_secret="s",
                            data_keys=DataCipher.generate_spec("k"), public_url="http://t")
        state = AppState(settings=settings, cipher=DataCipher(settings.data_keys))
        state.pool = await open_pool(dsn, "subsite", min_size=4, max_size=4)
        state.redis = aioredis.from_url(redis_url, decode_responses=True)
        await state.redis.delete(orders_stream(SITE))
        try:
            for i in range(ROUNDS):
                event = _event(i)
                async with state.pool.connection() as conn, conn.transaction():
                    await enqueue(conn, event)
                # The request's own publish and the loop's flush, at the same moment.
                await asyncio.gather(publish_committed(state, event), flush_outbox(state))
            sent = Counter(OrderEvent.from_fields(f).event_id for _, f in
                           await state.redis.xrange(orders_stream(SITE)))
            assert set(sent) == {_event(i).event_id for i in range(ROUNDS)}
            assert {k: n for k, n in sent.items() if n > 1} == {}
            async with state.pool.connection() as conn:
                pending = await (await conn.execute(
                    "SELECT count(*) AS n FROM event_outbox WHERE published_at IS NULL"
                )).fetchone()
            assert pending["n"] == 0
        finally:
            await state.redis.delete(orders_stream(SITE))
            await state.redis.aclose()
            await state.pool.close()
