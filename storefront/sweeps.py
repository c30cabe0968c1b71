"""Periodic retry sweeps: re-drive rows a first attempt left behind (a notification
that got no 2xx, a paid order whose fulfilment failed transiently)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)


async def sweep_forever(state: AppState, interval: float, query: str,
                        handle: Callable[[AppState, dict[str, Any]], Awaitable[Any]],
                        what: str) -> None:
    """Every `interval` seconds run `query` and `handle` each row; a failure is logged
    and the next sweep retries, so the loop never dies."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with state.pool.connection() as conn:
                rows = await (await conn.execute(query)).fetchall()
            for row in rows:
                await handle(state, row)
        except Exception:
            log.exception("%s sweep failed", what)
