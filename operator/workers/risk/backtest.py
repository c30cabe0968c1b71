"""Backtest: replay stored events through a policy version, beside what was decided.

The source is the worker's stored outcomes in HQ's PostgreSQL (``risk.decisions``, see
``store``): each row holds the event as the rules saw it and the action taken. Velocity features are
recomputed in a scratch key space (``kameng:risk:bt:<run>:``), replaying events in time
order, so the policy under test sees the counters it would have seen, and the live
counters are not touched. The scratch keys are deleted at the end.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from psycopg import AsyncConnection

from . import velocity
from .policy import CompiledPolicy, evaluate


@dataclass(frozen=True)
class Row:
    event_id: str
    site: str
    order_id: str
    event: str
    ts: int
    decided: str
    would: str
    would_rule: str


async def stored_events(conn: AsyncConnection, since_ms: int, site: str | None = None
                        ) -> list[dict[str, Any]]:
    """Every stored event since ``since_ms`` (of one site, or all), in time order."""
    cur = await conn.execute(
        "SELECT event_id, site, order_id, event, customer, ip, category, product, region,"
        " amount, currency, event_at, action FROM risk.decisions"
        " WHERE event_at >= %s AND (%s::text IS NULL OR site = %s)"
        " ORDER BY event_at, event_id",
        (datetime.fromtimestamp(since_ms / 1000, UTC), site, site))
    return [{"eventId": r[0], "site": r[1], "orderId": r[2], "event": r[3],
             "customer": r[4], "ip": r[5], "category": r[6], "product": r[7],
             "region": r[8], "amount": int(r[9]), "currency": r[10],
             "ts": int(r[11].timestamp() * 1000), "action": r[12]}
            for r in await cur.fetchall()]


async def replay(redis: aioredis.Redis, policy: CompiledPolicy,
                 records: Iterable[dict[str, Any]],
                 licences: dict[str, dict[str, Any]] | None = None) -> list[Row]:
    run = uuid.uuid4().hex[:12]
    scratch = f"kameng:risk:bt:{run}:"
    vel = velocity.Velocity(redis, prefix=scratch)
    rows: list[Row] = []
    try:
        for rec in records:
            if not policy.applies_to(rec["site"]):
                continue
            lic = (licences or {}).get(rec["site"]) or {}
            view = {"event": rec["event"], "eventId": rec["eventId"], "site": rec["site"],
                    "orderId": rec["orderId"], "customer": rec.get("customer", ""),
                    "ip": rec.get("ip", ""), "category": rec.get("category", ""),
                    "product": rec.get("product", ""), "region": rec.get("region", ""),
                    "amount": int(rec.get("amount", 0)),
                    "currency": rec.get("currency") or "CNY",
                    "ts": int(rec["ts"]),
                    "licenseCategories": list(lic.get("categories") or []),
                    "licenseRegions": list(lic.get("regions") or [])}
            feats = await vel.features(policy, view)
            verdict = evaluate([policy], view, {policy.name: feats})
            rows.append(Row(rec["eventId"], rec["site"], rec["orderId"], rec["event"],
                            int(rec["ts"]), rec.get("action", "allow"), verdict.action,
                            verdict.rule))
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{scratch}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    return rows


def summary(rows: list[Row]) -> str:
    pairs = Counter((r.decided, r.would) for r in rows)
    lines = [f"{len(rows)} events replayed"]
    lines += [f"  decided {d:<6} → would {w:<6} {n}" for (d, w), n in sorted(pairs.items())]
    return "\n".join(lines)
