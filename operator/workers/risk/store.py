"""The risk worker's outcomes in HQ's PostgreSQL (schema ``risk``, migration
``storefront/migrations/hq_1001_risk.sql``): one row per decided event and one per rule
hit, with each policy's generation, the mode the rule ran in and the feature values it saw.

A batch is ONE statement (data-modifying CTEs over ``unnest`` arrays): one round trip
however many events and hits, atomic, and idempotent — a redelivered event or a second
replica deciding the same event conflicts on the primary keys and changes nothing. The
statement also returns the events that were *already* stored, with their stored action,
so a redelivery publishes what was decided the first time, never a second opinion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from .policy import CompiledPolicy, Verdict

# Each side of the batch travels as ONE JSON document (json.dumps is C; psycopg's Python
# array dumper cost a fifth of the worker's time with 27 arrays a batch).
_SAVE = """
WITH d AS (
  INSERT INTO risk.decisions (event_id, site, order_id, event, customer, ip, category,
      product, region, amount, currency, event_at, action, rule, snoozed, policies,
      features, decided_at)
  SELECT event_id, site, order_id, event, customer, ip, category, product, region, amount,
      currency, to_timestamp(ts_ms / 1000.0), action, rule, snoozed, policies, features,
      to_timestamp(%(decided)s)
  FROM jsonb_to_recordset(%(d)s::jsonb) AS x(event_id text, site text, order_id text,
      event text, customer text, ip text, category text, product text, region text,
      amount bigint, currency text, ts_ms bigint, action text, rule text, snoozed boolean,
      policies jsonb, features jsonb)
  ON CONFLICT (event_id) DO NOTHING
), h AS (
  INSERT INTO risk.hits (event_id, policy, rule, generation, mode, action, reason, error,
      features)
  SELECT event_id, policy, rule, generation, mode, action, reason, error, features
  FROM jsonb_to_recordset(%(h)s::jsonb) AS x(event_id text, policy text, rule text,
      generation bigint, mode text, action text, reason text, error text, features jsonb)
  ON CONFLICT DO NOTHING
)
SELECT event_id, action, rule FROM risk.decisions WHERE event_id = ANY(%(ids)s::text[])
"""


@dataclass(frozen=True)
class Outcome:
    """One event's outcome as the worker computed it."""

    view: Mapping[str, Any]
    verdict: Verdict
    policies: Sequence[CompiledPolicy]
    features: Mapping[str, Mapping[str, int]]  # per policy name


def params_of(outcomes: Sequence[Outcome], decided_at: datetime) -> dict[str, Any]:
    """The statement's parameters (pure; unit-tested)."""
    ds: list[dict[str, Any]] = []
    hs: list[dict[str, Any]] = []
    for o in outcomes:
        v, verdict = o.view, o.verdict
        feats = {k: dict(f) for k, f in o.features.items()}
        gens = {pol.name: pol.generation for pol in o.policies}
        ds.append({
            "event_id": v["eventId"], "site": v["site"], "order_id": v["orderId"],
            "event": v["event"], "customer": v.get("customer") or "", "ip": v.get("ip") or "",
            "category": v.get("category") or "", "product": v.get("product") or "",
            "region": v.get("region") or "", "amount": int(v.get("amount") or 0),
            "currency": v.get("currency") or "CNY", "ts_ms": int(v["ts"]),
            "action": verdict.action, "rule": verdict.rule, "snoozed": verdict.snoozed,
            "policies": gens, "features": feats})
        hs += [{"event_id": v["eventId"], "policy": h.policy, "rule": h.rule,
                "generation": gens.get(h.policy, 0),
                "mode": "shadow" if h.shadow else "enforce", "action": h.action,
                "reason": h.reason, "error": h.error, "features": feats.get(h.policy, {})}
               for h in verdict.hits]
    return {"d": json.dumps(ds, separators=(",", ":")),
            "h": json.dumps(hs, separators=(",", ":")),
            "ids": [d["event_id"] for d in ds], "decided": decided_at.timestamp()}


class RiskStore:
    """HQ's database as the risk worker sees it: one connection, reopened when broken."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: AsyncConnection | None = None

    async def conn(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await AsyncConnection.connect(self.dsn, autocommit=True)
        return self._conn

    async def save(self, outcomes: Sequence[Outcome], decided_at: datetime
                   ) -> dict[str, tuple[str, str]]:
        """Store every outcome once; returns ``{event_id: (action, rule)}`` of the events
        that were stored before this call (redeliveries), as first decided."""
        if not outcomes:
            return {}
        conn = await self.conn()
        cur = await conn.execute(_SAVE, params_of(outcomes, decided_at))  # type: ignore[arg-type]
        return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
