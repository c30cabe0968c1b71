"""Redis side of the order contract: outbox → ``kameng:orders:<site>``, and the consumer
of ``kameng:decisions:<site>``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from kameng.contracts.events import (
    Decision,
    EventError,
    OrderEvent,
    decisions_stream,
    orders_stream,
)

from ..state import AppState

log = logging.getLogger("kameng.storefront.events")


async def enqueue(conn: AsyncConnection, event: OrderEvent) -> None:
    """Write ``event`` into the outbox inside the caller's transaction."""
    await conn.execute(
        "INSERT INTO event_outbox (event_id, fields) VALUES (%s, %s)"
        " ON CONFLICT (event_id) DO NOTHING",
        (event.event_id, Jsonb(event.to_fields())),
    )


async def publish_committed(state: AppState, *events: OrderEvent) -> None:
    """Publish ``events``, whose outbox rows the caller has just committed, and mark those
    rows published: one targeted lock, one Redis pipeline and one UPDATE, instead of a
    locking scan of the whole outbox per order step.

    The rows stay locked while Redis takes them, as :func:`flush_outbox` does: each of the
    two skips what the other holds and re-checks ``published_at``, so a row committed a
    moment ago is sent once, not by both (before: the periodic flush found it committed and
    unmarked and sent it again). If this fails, the loop publishes the rows later: a loss is
    impossible (a row is marked only after Redis took its event) and a duplicate after a
    crash is harmless (``event_id``)."""
    try:
        async with state.pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(
                "SELECT event_id FROM event_outbox WHERE event_id = ANY(%s)"
                " AND published_at IS NULL FOR UPDATE SKIP LOCKED",
                ([e.event_id for e in events],),
            )).fetchall()
            mine = {r["event_id"] for r in rows}
            if not mine:
                return
            async with state.redis.pipeline(transaction=False) as pipe:
                for event in events:
                    if event.event_id in mine:
                        pipe.xadd(orders_stream(state.site), event.to_fields())
                await pipe.execute()
            await conn.execute(
                "UPDATE event_outbox SET published_at = now() WHERE event_id = ANY(%s)",
                (list(mine),),
            )
    except Exception as exc:  # the outbox loop retries; the rows are still pending
        log.warning("event publish failed", extra={"error": type(exc).__name__})


async def flush_outbox(state: AppState, batch: int = 200) -> int:
    """Publish pending outbox rows. Rows are locked while being sent so concurrent flushes
    do not double-publish in the normal case (and a duplicate is harmless: ``event_id``)."""
    stream = orders_stream(state.site)
    sent = 0
    try:
        async with state.pool.connection() as conn, conn.transaction():
            rows = await (
                await conn.execute(
                    "SELECT event_id, fields FROM event_outbox WHERE published_at IS NULL"
                    " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (batch,),
                )
            ).fetchall()
            if not rows:
                return 0
            async with state.redis.pipeline(transaction=False) as pipe:
                for r in rows:
                    fields = (
                        r["fields"] if isinstance(r["fields"], dict) else json.loads(r["fields"])
                    )
                    pipe.xadd(stream, fields)
                await pipe.execute()
            await conn.execute(
                "UPDATE event_outbox SET published_at = now() WHERE event_id = ANY(%s)",
                ([r["event_id"] for r in rows],),
            )
            sent = len(rows)
    except Exception as exc:  # retried by the loop; state stays in the outbox
        log.warning("event publish failed", extra={"error": type(exc).__name__})
    return sent


async def outbox_loop(state: AppState, interval: float = 2.0) -> None:
    while True:
        await asyncio.sleep(interval)
        await flush_outbox(state)


async def decisions_loop(
    state: AppState, apply: Callable[[AppState, Decision], Awaitable[None]], block_ms: int = 2000
) -> None:
    """Follow ``kameng:decisions:<site>`` with plain ``XREAD`` from a cursor kept in the
    site's database.

    Not a consumer group: the site's Redis ACL user may only *read* the decision stream
    (consumer groups write). Every replica applies every decision, which is safe because
    applying one is idempotent; the cursor only avoids re-reading history after restarts.
    """
    redis = state.redis
    stream = decisions_stream(state.site)
    while True:
        try:
            async with state.pool.connection() as conn:
                row = await (
                    await conn.execute("SELECT value FROM settings WHERE key = %s", (_CURSOR,))
                ).fetchone()
            cursor = row["value"] if row else "0-0"
            while True:
                resp = await redis.xread({stream: cursor}, count=100, block=block_ms)
                entries = resp[0][1] if resp else []
                for entry_id, fields in entries:
                    try:
                        decision = Decision.from_fields(fields)
                    except EventError as exc:
                        log.warning("bad decision entry skipped", extra={"reason": str(exc)})
                    else:
                        await apply(state, decision)
                    cursor = entry_id
                if entries:
                    async with state.pool.connection() as conn:
                        await conn.execute(
                            "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key)"
                            " DO UPDATE SET value = EXCLUDED.value",
                            (_CURSOR, cursor),
                        )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis or DB away: retry, the shop keeps working
            log.warning("decision consumer error", extra={"error": type(exc).__name__})
            await asyncio.sleep(2)


_CURSOR = "decisions_cursor"
