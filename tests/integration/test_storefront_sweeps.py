"""The shared retry sweep re-drives pending rows on real PostgreSQL and survives a
failing handler (the next sweep retries); a row that always fails never stops the rest of
its batch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kameng_storefront.sweeps import sweep_forever, sweep_once
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


async def test_a_row_that_always_fails_does_not_stop_its_batch(pg_admin_dsn):
    with temp_database(pg_admin_dsn, "sweep") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE pending (id int PRIMARY KEY, done bool DEFAULT false)")
            conn.execute("INSERT INTO pending (id) SELECT generate_series(1, 5)")
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2,
                                       kwargs={"row_factory": dict_row}) as pool:
            state = SimpleNamespace(pool=pool)

            async def handle(st, row):
                if row["id"] == 1:
                    raise RuntimeError("poisoned")  # first in line, fails every time
                async with st.pool.connection() as conn:
                    await conn.execute("UPDATE pending SET done = true WHERE id = %s",
                                       (row["id"],))

            async def due(conn):  # a select function, as the delivery sweep's claim
                return await (await conn.execute(
                    "SELECT id FROM pending WHERE NOT done ORDER BY id")).fetchall()

            assert await sweep_once(state, due, handle, "test") == 4
            async with pool.connection() as conn:
                left = await (await conn.execute(
                    "SELECT array_agg(id) AS ids FROM pending WHERE NOT done")).fetchone()
            assert left["ids"] == [1]
