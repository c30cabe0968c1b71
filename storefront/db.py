"""PostgreSQL: a psycopg 3 async pool and versioned SQL migrations applied at start-up."""

from __future__ import annotations

import logging
from importlib import resources

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("kameng.storefront.db")

# Any constant works; it only has to be the same in every replica so that concurrent
# start-ups apply migrations one after another instead of racing.
_MIGRATION_LOCK = 0x6B616D656E67


def migration_files(mode: str) -> list[tuple[str, str]]:
    """``(version, sql)`` of this mode's migrations, ordered by version."""
    out = []
    for entry in resources.files("kameng_storefront").joinpath("migrations").iterdir():
        name = entry.name
        if name.startswith(f"{mode}_") and name.endswith(".sql"):
            out.append((name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: AsyncConnection, mode: str) -> list[str]:
    """Apply pending migrations in order, each in its own transaction. Returns versions."""
    applied: list[str] = []
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {r[0] for r in await cur.fetchall()}
        for version, sql in migration_files(mode):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)  # type: ignore[arg-type]  # trusted package file
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                )
            log.info("migration applied", extra={"version": version})
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


async def open_pool(
    dsn: str, mode: str, min_size: int = 2, max_size: int = 10
) -> AsyncConnectionPool:
    async with await AsyncConnection.connect(dsn) as conn:
        await migrate(conn, mode)
    pool = AsyncConnectionPool(
        dsn, min_size=min_size, max_size=max_size, open=False, kwargs={"row_factory": dict_row}
    )
    await pool.open(wait=True, timeout=30)
    return pool
