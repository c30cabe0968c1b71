"""Review: the one service behind `kameng risk review|snooze` and HQ's review back office.

Everything reads the risk worker's stored outcomes in HQ's PostgreSQL (``risk.decisions``
with their rule hits, see ``store``); Redis is touched only where the hot path needs it.

* The **queue**: orders whose latest acted-on decision is ``review`` or ``freeze`` and that
  no reviewer has decided yet, with the rules that hit, their reasons and feature values.
* A reviewer's **verdict** (``allow`` releases and delivers, ``block`` refuses and refunds
  through the shop's one refund path) is recorded once per order with who, when and why
  (``risk.reviews``; its key makes a second verdict a no-op), then published as a
  :class:`~kameng.contracts.events.Decision` once per order (marker
  ``kameng:risk:review:<order_id>`` set atomically with the XADD). Repeating a verdict —
  a double click, a retry after a crash between the two writes — publishes the STORED
  verdict if it was not published yet, and nothing otherwise.
* A **snooze** ("allow this customer for 7 days") is audited in ``risk.snoozes`` and is
  live as ``kameng:risk:snooze:<key>:<value>`` with the expiry as TTL (the worker checks
  it on every event); while it lives, that entity's hits are still evaluated and stored,
  but nothing is acted on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from kameng.contracts.events import Decision, decisions_stream

from .rows import HIT_FIELDS

REVIEW_PREFIX = "kameng:risk:review:"
SNOOZE_PREFIX = "kameng:risk:snooze:"
SNOOZE_KEYS = ("customer", "ip")  # entities a snooze can name
QUEUE_ACTIONS = ("review", "freeze")
VERDICTS = ("allow", "block")
REVIEW_TTL_S = 90 * 86400
MAX_NOTE = 500

# KEYS: publish marker, decisions stream. ARGV: verdict, ttl, then decision pairs.
_PUBLISH = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) == false then
  return 0
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
"""


class ReviewError(ValueError):
    """A verdict or snooze that cannot be taken (the message is safe to show)."""


def snooze_key(key: str, value: str) -> str:
    if key not in SNOOZE_KEYS or not value:
        raise ReviewError(f"a snooze names one of {', '.join(SNOOZE_KEYS)} and a value")
    return f"{SNOOZE_PREFIX}{key}:{value}"


def snooze_keys_of(view: Mapping[str, Any]) -> list[str]:
    return [snooze_key(k, str(view[k])) for k in SNOOZE_KEYS if view.get(k)]


_AGE = re.compile(r"^(\d+)([mhd])$")


def parse_age(text: str) -> timedelta | None:
    """'30m', '24h', '7d' → timedelta; '' → None (no bound)."""
    if not text:
        return None
    m = _AGE.match(text.strip())
    if not m:
        raise ReviewError(f"not an age: {text!r} (use 30m, 24h or 7d)")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(minutes=n) if unit == "m" else timedelta(hours=n) if unit == "h" \
        else timedelta(days=n)


@dataclass(frozen=True)
class QueueFilter:
    site: str = ""
    action: str = ""  # "", "review" or "freeze"
    newer_than: timedelta | None = None
    older_than: timedelta | None = None
    limit: int = 200

    def __post_init__(self) -> None:
        if self.action and self.action not in QUEUE_ACTIONS:
            raise ReviewError(f"action is one of {', '.join(QUEUE_ACTIONS)}")


async def _with_hits(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Each stored decision's hits (in evaluation order), each with the feature values its
    policy saw (the decision's ``features``). Decisions stored by a worker of the previous
    release during a rolling upgrade have their hits in ``risk.hits`` (hq_1003)."""
    legacy: dict[str, list[dict[str, Any]]] = {}
    old = [r["event_id"] for r in rows if not r["hits"]]
    if old:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.SQL(
                "SELECT event_id, {cols} FROM risk.hits WHERE event_id = ANY(%s)"
                " ORDER BY event_id, policy, rule").format(
                    cols=sql.SQL(", ").join(map(sql.Identifier, HIT_FIELDS))), (old,))
            for h in await cur.fetchall():
                legacy.setdefault(h.pop("event_id"), []).append(h)
    for r in rows:
        r["hits"] = hits_of(r, legacy.get(r["event_id"], []))


def hits_of(row: Mapping[str, Any], legacy: list[dict[str, Any]] | None = None
            ) -> list[dict[str, Any]]:
    """A stored decision's hits (or ``legacy``, its ``risk.hits`` rows, when it has none of
    its own), each with the feature values of its policy as the decision recorded them."""
    feats = row["features"] or {}
    return [{**h, "features": feats.get(h["policy"], {})}
            for h in row["hits"] or legacy or []]


_DECISION_COLS = sql.SQL(", ").join(map(sql.Identifier, (
    "event_id", "site", "order_id", "event", "customer", "ip", "category", "product",
    "region", "amount", "currency", "event_at", "action", "rule", "snoozed", "policies",
    "features", "hits", "decided_at")))


async def queue(conn: AsyncConnection, f: QueueFilter) -> list[dict[str, Any]]:
    """Undecided orders under review or frozen, newest first: per order its latest
    acted-on decision with every hit (rule, reason, mode, feature values)."""
    now = datetime.now(UTC)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL(
            "SELECT * FROM (SELECT DISTINCT ON (d.order_id) {cols}"
            " FROM risk.decisions d WHERE d.action = ANY(%(acts)s)"
            "   AND (%(site)s = '' OR d.site = %(site)s)"
            "   AND NOT EXISTS (SELECT 1 FROM risk.reviews r WHERE r.order_id = d.order_id)"
            " ORDER BY d.order_id, d.decided_at DESC) q"
            " WHERE (%(after)s::timestamptz IS NULL OR decided_at >= %(after)s)"
            "   AND (%(before)s::timestamptz IS NULL OR decided_at <= %(before)s)"
            " ORDER BY decided_at DESC LIMIT %(limit)s").format(cols=_DECISION_COLS),
            {"acts": [f.action] if f.action else list(QUEUE_ACTIONS), "site": f.site,
             "after": now - f.newer_than if f.newer_than else None,
             "before": now - f.older_than if f.older_than else None,
             "limit": max(1, min(f.limit, 1000))})
        rows = await cur.fetchall()
    await _with_hits(conn, rows)
    return rows


async def order(conn: AsyncConnection, order_id: str, history: int = 20
                ) -> dict[str, Any] | None:
    """An order as a reviewer sees it: every decided event with its hits, the review
    (if any), the customer's recent history and the live snoozes of its customer and IP."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT {cols} FROM risk.decisions WHERE order_id = %s"
                                  " ORDER BY event_at, event_id").format(cols=_DECISION_COLS),
                          (order_id,))
        events = await cur.fetchall()
        if not events:
            return None
        await _with_hits(conn, events)
        latest = events[-1]
        customer, ip = latest["customer"], latest["ip"]
        past: list[dict[str, Any]] = []
        if customer:
            await cur.execute(
                "SELECT site, order_id, event, amount, action, rule, event_at"
                " FROM risk.decisions WHERE customer = %s AND order_id <> %s"
                " ORDER BY event_at DESC LIMIT %s", (customer, order_id, history))
            past = await cur.fetchall()
        await cur.execute(
            "SELECT DISTINCT ON (entity, value) entity, value, until_at, set_by, reason,"
            " set_at FROM risk.snoozes WHERE until_at > now()"
            " AND ((entity = 'customer' AND value = %s) OR (entity = 'ip' AND value = %s))"
            " ORDER BY entity, value, set_at DESC", (customer or None, ip or None))
        snoozes = await cur.fetchall()
    acted = [e for e in events if e["action"] in QUEUE_ACTIONS]
    return {"order_id": order_id, "site": latest["site"], "events": events,
            "customer": customer, "ip": ip, "history": past, "snoozes": snoozes,
            "reviewable": bool(acted), "review": await reviewed(conn, order_id)}


async def reviewed(conn: AsyncConnection, order_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT order_id, site, action, reviewer, note, reviewed_at"
                          " FROM risk.reviews WHERE order_id = %s", (order_id,))
        return await cur.fetchone()


@dataclass(frozen=True)
class ReviewResult:
    first: bool  # this call recorded the verdict (False: an earlier one had)
    record: dict[str, Any]  # the stored verdict: action, reviewer, note, reviewed_at


async def review(conn: AsyncConnection, redis: aioredis.Redis, site: str, order_id: str,
                 action: str, by: str, note: str) -> ReviewResult:
    """Record a reviewer's verdict once and publish it once (see the module doc)."""
    if action not in VERDICTS:
        raise ReviewError("a reviewer allows or blocks")
    by, note = by.strip(), note.strip()
    if not by:
        raise ReviewError("a review records who made it")
    if not note:
        raise ReviewError("a review records why")
    note = note[:MAX_NOTE]
    row = await (await conn.execute(
        "SELECT 1 FROM risk.decisions WHERE site = %s AND order_id = %s"
        " AND action = ANY(%s) LIMIT 1", (site, order_id, list(QUEUE_ACTIONS)))).fetchone()
    if row is None:
        # Only an order the rules held can be released or blocked by a reviewer: a
        # verdict on any other order would be a way round the shop's own refund rules.
        raise ReviewError(f"order {order_id} of site {site} is not under review or frozen")
    ins = await (await conn.execute(
        "INSERT INTO risk.reviews (order_id, site, action, reviewer, note)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING RETURNING 1",
        (order_id, site, action, by, note))).fetchone()
    if not conn.autocommit:
        await conn.commit()  # stored before it is published, never the other way round
    rec = await reviewed(conn, order_id)
    assert rec is not None
    await _publish(redis, rec)
    return ReviewResult(ins is not None, rec)


async def _publish(redis: aioredis.Redis, rec: Mapping[str, Any]) -> bool:
    dec = Decision(order_id=rec["order_id"], action=rec["action"],
                   rule=f"review:{rec['reviewer']}"[:200], ts=rec["reviewed_at"]).to_fields()
    script = redis.register_script(_PUBLISH)
    done = await script(keys=[REVIEW_PREFIX + rec["order_id"], decisions_stream(rec["site"])],
                        args=[rec["action"], REVIEW_TTL_S,
                              *[x for kv in dec.items() for x in kv]])
    return bool(done)


async def snooze(conn: AsyncConnection, redis: aioredis.Redis, key: str, value: str,
                 seconds: int, by: str, reason: str) -> datetime:
    """Act on nothing for one customer or IP for ``seconds``; audited. Returns the end."""
    rkey = snooze_key(key, value)
    by, reason = by.strip(), reason.strip()[:MAX_NOTE]
    if seconds <= 0 or not by or not reason:
        raise ReviewError("a snooze needs a positive duration, who set it and why")
    if seconds > 90 * 86400:
        raise ReviewError("a snooze lasts at most 90 days")
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    # The audit row first: a snooze that acts must never be missing from the trail.
    await conn.execute("INSERT INTO risk.snoozes (entity, value, until_at, set_by, reason)"
                       " VALUES (%s, %s, %s, %s, %s)", (key, value, until, by, reason))
    if not conn.autocommit:
        await conn.commit()
    await redis.set(rkey, json.dumps({"by": by, "reason": reason,
                                      "until": until.isoformat()}), ex=seconds)
    return until
