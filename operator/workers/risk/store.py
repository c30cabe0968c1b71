"""The risk worker's outcomes in HQ's PostgreSQL (schema ``risk``, migrations
``storefront/migrations/hq_1001_risk.sql`` and ``hq_1003``): one row per decided event,
with each policy's generation, the feature values the rules saw and every rule hit (the
mode the rule ran in, its action, reason and run-time error) in the row itself.

A batch is ONE statement (an insert from a JSON document of positional rows): one round
trip however many events, atomic, and idempotent — a redelivered event or a second replica
deciding the same event conflicts on the primary key and changes nothing. Events the
statement did not insert were stored *before* it (or by a replica it waited for); their
stored action is read back, so a redelivery publishes what was decided the first time,
never a second opinion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from .policy import CompiledPolicy, Verdict
from .rows import HIT_FIELDS

# The batch travels as ONE JSON document (json.dumps is C; psycopg's Python array dumper
# cost a fifth of the worker's time with 27 arrays a batch) of positional rows, columns in
# the order below: a list per row encodes in a third of the time of a dict per row (the
# worker's hot path). The hits are stored as objects: people read them with SQL.
DECISION_COLUMNS = ("event_id", "site", "order_id", "event", "customer", "ip", "category",
                    "product", "region", "amount", "currency", "ts_ms", "action", "rule",
                    "snoozed", "policies", "features", "hits")

_SAVE = """
INSERT INTO risk.decisions (event_id, site, order_id, event, customer, ip, category,
    product, region, amount, currency, event_at, action, rule, snoozed, policies,
    features, hits, decided_at)
SELECT r->>0, r->>1, r->>2, r->>3, r->>4, r->>5, r->>6, r->>7, r->>8, (r->>9)::bigint,
    r->>10, to_timestamp((r->>11)::bigint / 1000.0), r->>12, r->>13, (r->>14)::boolean,
    r->15, r->16, r->17, to_timestamp(%(decided)s)
FROM jsonb_array_elements(%(d)s::jsonb) AS r
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

_STORED = "SELECT event_id, action, rule FROM risk.decisions WHERE event_id = ANY(%s)"


# Rows are fresh lists of plain values: no cycle to guard against (the check cost a sixth
# of the encoding).
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


@dataclass(frozen=True)
class Outcome:
    """One event's outcome as the worker computed it."""

    view: Mapping[str, Any]
    verdict: Verdict
    policies: Sequence[CompiledPolicy]
    features: Mapping[str, Mapping[str, int]]  # per policy name


def params_of(outcomes: Sequence[Outcome], decided_at: datetime) -> dict[str, Any]:
    """The statement's parameters (pure; unit-tested): rows in ``DECISION_COLUMNS``
    order, each hit an object of ``HIT_FIELDS``."""
    ds: list[list[Any]] = []
    gens_of: dict[int, dict[str, int]] = {}
    for o in outcomes:
        v, verdict = o.view, o.verdict
        # Generations per list of policies, not per event (the same list, batch-wide).
        gens = gens_of.get(id(o.policies))
        if gens is None:
            gens = gens_of[id(o.policies)] = {p.name: p.generation for p in o.policies}
        ds.append([v["eventId"], v["site"], v["orderId"], v["event"], v.get("customer") or "",
                   v.get("ip") or "", v.get("category") or "", v.get("product") or "",
                   v.get("region") or "", int(v.get("amount") or 0),
                   v.get("currency") or "CNY", int(v["ts"]), verdict.action, verdict.rule,
                   verdict.snoozed, gens, o.features,
                   [dict(zip(HIT_FIELDS, (h.policy, h.rule, gens.get(h.policy, 0),
                                          "shadow" if h.shadow else "enforce", h.action,
                                          h.reason, h.error), strict=True))
                    for h in verdict.hits]])
    return {"d": _dumps(ds), "ids": [d[0] for d in ds], "decided": decided_at.timestamp()}


class RiskStore:
    """HQ's database as the risk worker sees it: ``connections`` connections (two batches
    may be storing at once, see ``ConsumerConfig.overlap_depth``), each reopened when
    broken."""

    def __init__(self, dsn: str, connections: int = 2) -> None:
        self.dsn = dsn
        self._conns: list[AsyncConnection | None] = [None] * max(1, connections)
        self._locks = [asyncio.Lock() for _ in self._conns]

    async def _conn(self, i: int) -> AsyncConnection:
        conn = self._conns[i]
        if conn is None or conn.closed or conn.broken:
            conn = self._conns[i] = await AsyncConnection.connect(self.dsn, autocommit=True)
        return conn

    async def save(self, outcomes: Sequence[Outcome], decided_at: datetime
                   ) -> dict[str, tuple[str, str]]:
        """Store every outcome once; returns ``{event_id: (action, rule)}`` of the events
        that were stored before this call (redeliveries), as first decided."""
        if not outcomes:
            return {}
        i = next((n for n, lock in enumerate(self._locks) if not lock.locked()), 0)
        async with self._locks[i]:
            conn = await self._conn(i)
            params = params_of(outcomes, decided_at)
            cur = await conn.execute(_SAVE, params)  # type: ignore[arg-type]
            inserted = {r[0] for r in await cur.fetchall()}
            before = [eid for eid in params["ids"] if eid not in inserted]
            if not before:
                return {}
            cur = await conn.execute(_STORED, (before,))
            return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}

    async def close(self) -> None:
        for conn in self._conns:
            if conn is not None:
                await conn.close()
        self._conns = [None] * len(self._conns)
