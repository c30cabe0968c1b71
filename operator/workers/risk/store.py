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
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from .policy import CompiledPolicy, Verdict

_SAVE = """
WITH d AS (
  INSERT INTO risk.decisions (event_id, site, order_id, event, customer, ip, category,
      product, region, amount, currency, event_at, action, rule, snoozed, policies,
      features, decided_at)
  SELECT * FROM unnest(%(eid)s::text[], %(site)s::text[], %(oid)s::text[], %(ev)s::text[],
      %(cust)s::text[], %(ip)s::text[], %(cat)s::text[], %(prod)s::text[],
      %(region)s::text[], %(amount)s::bigint[], %(cur)s::text[], %(at)s::timestamptz[],
      %(action)s::text[], %(rule)s::text[], %(snoozed)s::boolean[], %(pols)s::jsonb[],
      %(feats)s::jsonb[], %(decided)s::timestamptz[])
  ON CONFLICT (event_id) DO NOTHING
), h AS (
  INSERT INTO risk.hits (event_id, policy, rule, generation, mode, action, reason, error,
      features)
  SELECT * FROM unnest(%(h_eid)s::text[], %(h_pol)s::text[], %(h_rule)s::text[],
      %(h_gen)s::bigint[], %(h_mode)s::text[], %(h_action)s::text[], %(h_reason)s::text[],
      %(h_error)s::text[], %(h_feats)s::jsonb[])
  ON CONFLICT DO NOTHING
)
SELECT event_id, action, rule FROM risk.decisions WHERE event_id = ANY(%(eid)s::text[])
"""


@dataclass(frozen=True)
class Outcome:
    """One event's outcome as the worker computed it."""

    view: Mapping[str, Any]
    verdict: Verdict
    policies: Sequence[CompiledPolicy]
    features: Mapping[str, Mapping[str, int]]  # per policy name


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def params_of(outcomes: Sequence[Outcome], decided_at: datetime) -> dict[str, list[Any]]:
    """The statement's arrays (pure; unit-tested)."""
    p: dict[str, list[Any]] = {k: [] for k in (
        "eid", "site", "oid", "ev", "cust", "ip", "cat", "prod", "region", "amount", "cur",
        "at", "action", "rule", "snoozed", "pols", "feats", "decided", "h_eid", "h_pol",
        "h_rule", "h_gen", "h_mode", "h_action", "h_reason", "h_error", "h_feats")}
    for o in outcomes:
        v, verdict = o.view, o.verdict
        p["eid"].append(v["eventId"])
        p["site"].append(v["site"])
        p["oid"].append(v["orderId"])
        p["ev"].append(v["event"])
        p["cust"].append(v.get("customer") or "")
        p["ip"].append(v.get("ip") or "")
        p["cat"].append(v.get("category") or "")
        p["prod"].append(v.get("product") or "")
        p["region"].append(v.get("region") or "")
        p["amount"].append(int(v.get("amount") or 0))
        p["cur"].append(v.get("currency") or "CNY")
        p["at"].append(datetime.fromtimestamp(int(v["ts"]) / 1000, UTC))
        p["action"].append(verdict.action)
        p["rule"].append(verdict.rule)
        p["snoozed"].append(verdict.snoozed)
        p["pols"].append(_dumps({pol.name: pol.generation for pol in o.policies}))
        p["feats"].append(_dumps({k: dict(f) for k, f in o.features.items()}))
        p["decided"].append(decided_at)
        gens = {pol.name: pol.generation for pol in o.policies}
        for h in verdict.hits:
            p["h_eid"].append(v["eventId"])
            p["h_pol"].append(h.policy)
            p["h_rule"].append(h.rule)
            p["h_gen"].append(gens.get(h.policy, 0))
            p["h_mode"].append("shadow" if h.shadow else "enforce")
            p["h_action"].append(h.action)
            p["h_reason"].append(h.reason)
            p["h_error"].append(h.error)
            p["h_feats"].append(_dumps(dict(o.features.get(h.policy, {}))))
    return p


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
