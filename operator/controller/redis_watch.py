"""Redis restarted: its ACL users are gone, and with them every shop's Redis.

Redis keeps ACL users only in an ACL file, which most deployments do not configure (RDB
and AOF keep data, not users). Until the next resync (minutes) every storefront would be
refused at AUTH. The operator notices a restart by the server's ``run_id`` (``INFO
server``, one small call every :data:`INTERVAL_S`) and sets every user it applied again,
in one round trip: users are back within seconds of Redis answering.
"""

from __future__ import annotations

import asyncio
import logging

from kameng.provision.redis_acl import RedisUnavailable

from . import metrics
from .runtime import Runtime

log = logging.getLogger(__name__)
INTERVAL_S = 2.0


async def watch(rt: Runtime, interval: float = INTERVAL_S) -> None:
    seen: str | None = None
    while True:
        try:
            current = await rt.redis.server_id()
            if seen is not None and current != seen:
                n = await rt.redis.restore()
                metrics.REDIS_RESTARTS.inc()
                log.warning("Redis restarted (new run_id): %d ACL users set again", n)
            seen = current
        except RedisUnavailable as exc:
            # Down, or restarting: the users are restored once it answers again. A
            # restore that failed half-way is retried: `seen` still holds the old id.
            log.debug("Redis watch: %s", exc)
        await asyncio.sleep(interval)


def start(rt: Runtime) -> asyncio.Task[None]:
    return asyncio.create_task(watch(rt), name="redis-watch")
