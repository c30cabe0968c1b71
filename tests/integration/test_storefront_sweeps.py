"""The shared retry sweep re-drives pending rows on real PostgreSQL and survives a
failing handler (the next sweep retries)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kameng_storefront.sweeps import sweep_forever
from tests.support.storefront import temp_database


async def test_sweep_retries_until_handled(pg_admin_dsn):
    with temp_database(pg_admin_dsn, "sweep") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE pending (id int PRIMARY KEY, done bool DEFAULT false)")
            conn.execute("INSERT INTO pending (id) VALUES (1), (2)")
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2,
                                       kwargs={"row_factory": dict_row}) as pool:
            state = SimpleNamespace(pool=pool)
            calls: list[int] = []

            async def handle(st, row):
                calls.append(row["id"])
                if len(calls) == 1:
                    raise RuntimeError("transient")  # first attempt fails
                async with st.pool.connection() as conn:
                    await conn.execute("UPDATE pending SET done = true WHERE id = %s",
                                       (row["id"],))

            task = asyncio.create_task(sweep_forever(
                state, 0.05, "SELECT id FROM pending WHERE NOT done ORDER BY id", handle,
                "test"))
            try:
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    async with pool.connection() as conn:
                        left = await (await conn.execute(
                            "SELECT count(*) AS n FROM pending WHERE NOT done")).fetchone()
                    if left["n"] == 0:
                        break
                assert left["n"] == 0
                assert not task.done()  # the failure did not end the loop
                assert calls[:1] == [1]
                assert calls.count(1) == 2  # retried on the next sweep
            finally:
                task.cancel()
