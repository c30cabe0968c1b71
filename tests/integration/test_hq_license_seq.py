"""HQ's record of each site's highest license-token sequence, on real PostgreSQL: the
usual call (a token no newer than the recorded one) takes no row lock, so a site's API
calls never queue behind each other; a newer token is recorded, an older one is answered
with the higher sequence it is refused by."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from kameng_storefront.db import open_pool
from kameng_storefront.hq.site_auth import highest_license_seq
from tests.support.storefront import temp_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(pg_admin_dsn):
    with temp_database(pg_admin_dsn, "kameng_seq") as dsn:
        p = await open_pool(dsn, "hq", min_size=2, max_size=4)
        try:
            yield p, dsn
        finally:
            await p.close()


async def test_the_common_call_takes_no_lock(pool) -> None:
    p, dsn = pool
    assert await highest_license_seq(p, "moon", 3) == 3
    # Another caller holds the site's row (as an in-flight call that recorded a renewal
    # would until it commits): a call with the same or an older token does not wait.
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        await holder.execute("SELECT * FROM site_license_seq WHERE site = 'moon' FOR UPDATE")
        assert await asyncio.wait_for(highest_license_seq(p, "moon", 3), timeout=3) == 3
        assert await asyncio.wait_for(highest_license_seq(p, "moon", 2), timeout=3) == 3
        await holder.rollback()


async def test_newer_tokens_are_recorded_and_older_ones_see_the_highest(pool) -> None:
    p, _ = pool
    assert await highest_license_seq(p, "sun", 5) == 5
    assert await highest_license_seq(p, "sun", 4) == 5  # older: refused by the caller
    assert await highest_license_seq(p, "sun", 7) == 7  # a renewal
    assert await highest_license_seq(p, "sun", 6) == 7
    assert await highest_license_seq(p, "star", 1) == 1  # per site
    # Concurrent renewals: the highest wins whatever the order.
    got = await asyncio.gather(*(highest_license_seq(p, "sun", s) for s in (9, 8, 10, 8)))
    assert max(got) == 10
    assert await highest_license_seq(p, "sun", 1) == 10
