"""Periodic retry sweeps: re-drive rows a first attempt left behind (a notification
that got no 2xx, a paid order whose fulfilment failed transiently or whose refund is due).

Fairness is the caller's query: take rows by when they are due (a failed row moves back by
its backoff), never "the first N", or a few rows that always fail hide all newer ones. A
failing row never stops the rest of its batch or the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from .state import AppState

log = logging.getLogger(__name__)

Row = dict[str, Any]
# A query, or a function that selects (typically claims) the rows in one transaction.
Select = str | Callable[["AsyncConnection"], Awaitable[list[Row]]]


async def sweep_once(state: AppState, select: Select,
                     handle: Callable[[AppState, Row], Awaitable[Any]], what: str) -> int:
    """Select the due rows (committed before any is handled, so claims are visible to other
    replicas) and handle each; returns how many were handled without an error."""
    async with state.pool.connection() as conn:
        if isinstance(select, str):
            rows = await (await conn.execute(select)).fetchall()  # type: ignore[arg-type]
        else:
            rows = await select(conn)
    ok = 0
    for row in rows:
        try:
            await handle(state, row)
            ok += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # this row is retried by a later sweep; the others go on
            log.exception("%s sweep: a row failed", what)
    return ok


async def sweep_forever(state: AppState, interval: float, select: Select,
                        handle: Callable[[AppState, Row], Awaitable[Any]],
                        what: str) -> None:
    """Every `interval` seconds :func:`sweep_once`; a failure is logged and the next sweep
    retries, so the loop never dies."""
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep_once(state, select, handle, what)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s sweep failed", what)
