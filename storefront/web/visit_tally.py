"""Page views counted in memory, added to Redis in batches (the shop's visit KPI)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

VISIT_FLUSH_SECONDS = 1.0


class VisitTally:
    """Page views counted in memory and added to Redis (``shop.kpis.visit_flush_loop``) every
    :data:`VISIT_FLUSH_SECONDS`: a Redis round trip per view was 37 % of a cached
    catalogue hit's time (``bench/storefront_bench.py --profile``). One pipelined
    ``HINCRBY`` per (day, category) a second adds the same numbers; a worker that dies
    loses at most that second's views (a lost count is better than a slow page)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[date, str]] = Counter()

    def add(self, category: str) -> None:
        self._counts[(datetime.now(UTC).date(), category)] += 1

    def pending(self) -> int:
        return sum(self._counts.values())

    async def flush(self, redis: aioredis.Redis, key_of: Callable[[date], str],
                    ttl_seconds: int) -> None:
        """Add what was counted to Redis (hash ``key_of(day)``, field = category, kept
        ``ttl_seconds``); on a failure it is kept for the next flush."""
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        try:
            pipe = redis.pipeline(transaction=False)
            for (day, category), n in counts.items():
                pipe.hincrby(key_of(day), category, n)
                pipe.expire(key_of(day), ttl_seconds)
            await pipe.execute()
        except BaseException:
            self._counts.update(counts)  # counted again next time (or at shutdown)
            raise
