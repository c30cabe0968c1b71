"""Risk test harness (shared with bench/risk_bench.py): HQ's database with the risk schema,
a risk worker wired to it, and readers of what it stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from kameng.workers.risk.review import hits_of

from .storefront import temp_database


async def migrate_hq(dsn: str) -> None:
    from kameng_storefront.db import migrate

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await migrate(conn, "hq")


@contextmanager
def hq_database(admin_dsn: str) -> Iterator[str]:
    """A fresh HQ database with every HQ migration applied (the risk schema included)."""
    with temp_database(admin_dsn, "kameng_risk") as dsn:
        asyncio.run(migrate_hq(dsn))
        yield dsn


def decision_row(dsn: str, event_id: str) -> dict[str, Any] | None:
    """The stored outcome of one event, with its hits as the review pages read them
    (sorted by policy and rule)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM risk.decisions WHERE event_id = %s",
                           (event_id,)).fetchone()
    if row is not None:
        row["hits"] = sorted(hits_of(row), key=lambda h: (h["policy"], h["rule"]))
    return row
