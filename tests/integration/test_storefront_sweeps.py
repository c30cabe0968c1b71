"""The shared retry sweep re-drives pending rows on real PostgreSQL and survives a
failing handler (the next sweep retries); a row that always fails never stops the rest of
its batch; the real sweepers' own queries pick exactly the rows they must."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kameng_storefront.sweeps import sweep_forever, sweep_once
from tests.support.storefront import temp_database
from tests.support.wait import async_wait_for


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


async def _run_sweeper(sweeper, state, module, handler_name: str, expected: set[str]
                       ) -> set[str]:
    """Run the REAL sweeper (its own query) against real PostgreSQL, its handler swapped
    for a recorder: which rows does the query pick?"""
    picked: set[str] = set()

    async def record(st, row, *args, **kwargs):
        picked.add(row if isinstance(row, str) else row["id"])

    original = getattr(module, handler_name)
    setattr(module, handler_name, record)
    task = asyncio.create_task(sweeper(state, interval=0.05))
    try:
        await async_wait_for(lambda: picked >= expected, what=f"{handler_name} sweep")
        await asyncio.sleep(0.3)  # a few more sweeps: nothing else may be picked
    finally:
        task.cancel()
        setattr(module, handler_name, original)
    return picked


# The delivery sweep's own query (claim_due: due by next_attempt_at, SKIP LOCKED) runs for
# real in test_storefront_money.py (fairness, refusals while suspended).


async def test_notification_sweep_query_picks_only_unnotified_stale_payments(pg_admin_dsn):
    from kameng_storefront.db import open_pool
    from kameng_storefront.hq import notifications

    with temp_database(pg_admin_dsn, "sweepn") as dsn:
        pool = await open_pool(dsn, "hq", min_size=1, max_size=2)
        try:
            rows = [  # id, status, paid how long ago, notified
                ("N-old", "paid", "1 minute", False), ("N-new", "paid", "0 seconds", False),
                ("N-done", "paid", "1 minute", True), ("N-created", "created", None, False),
                ("N-refunded", "refunded", "1 minute", False),
            ]
            async with pool.connection() as conn:
                for i, (pid, status, ago, notified) in enumerate(rows):
                    await conn.execute(
                        "INSERT INTO payments (id, site, order_id, amount_fen, status,"
                        " notify_url, return_url, paid_at, notified_at)"
                        " VALUES (%s, 'demo', %s, 100, %s, 'http://n', 'http://r',"
                        " CASE WHEN %s::interval IS NULL THEN NULL ELSE now() - %s::interval END,"
                        " CASE WHEN %s THEN now() END)",
                        (pid, f"O{i}", status, ago, ago, notified))
            state = SimpleNamespace(pool=pool)
            assert await _run_sweeper(notifications.notification_sweeper, state, notifications,
                                      "notify_payment", {"N-old"}) == {"N-old"}
        finally:
            await pool.close()
