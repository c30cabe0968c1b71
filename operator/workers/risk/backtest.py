"""Backtest: replay stored events through a policy version, beside what was decided.

The source is the worker's decision records (``kameng:risk:d:<event_id>``, kept 30 days):
each holds the event as the rules saw it and the action taken. Velocity features are
recomputed in a scratch key space (``kameng:risk:bt:<run>:``), replaying events in time
order, so the policy under test sees the counters it would have seen, and the live
counters are not touched. The scratch keys are deleted at the end.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from . import velocity
from .policy import CompiledPolicy, evaluate
from .worker import RECORD_PREFIX


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


async def stored_events(redis: aioredis.Redis, since_ms: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for key in redis.scan_iter(match=f"{RECORD_PREFIX}*", count=1000):
        raw = await redis.get(key)
        if raw is None:
            continue
        rec = json.loads(raw)
        if int(rec.get("ts", 0)) >= since_ms:
            out.append(rec)
    out.sort(key=lambda r: (int(r["ts"]), r["eventId"]))
    return out


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
                    "amount": int(rec.get("amount", 0)), "currency": "CNY",
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
