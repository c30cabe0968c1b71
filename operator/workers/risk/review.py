"""Reviewer decisions and per-entity snoozes, on the risk worker's Redis.

* A reviewer's verdict on an order under review or frozen is a
  :class:`~kameng.contracts.events.Decision` (``allow`` releases and delivers, ``block``
  refuses and refunds through the shop's existing refund path) published once per
  (order, verdict) and recorded with who and when in ``kameng:risk:review:<order_id>``.
* A snooze ("allow this customer for 7 days") is ``kameng:risk:snooze:<key>:<value>``
  with the expiry as TTL and who/why as value; while it lives, that entity's hits are
  still evaluated and stored, but nothing is acted on (the worker publishes no decision).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from kameng.contracts.events import Decision, decisions_stream

REVIEW_PREFIX = "kameng:risk:review:"
SNOOZE_PREFIX = "kameng:risk:snooze:"
SNOOZE_KEYS = ("customer", "ip")  # entities a snooze can name
REVIEW_TTL_S = 90 * 86400

# KEYS: review record, decisions stream. ARGV: record json, ttl, then decision pairs.
_REVIEW = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) == false then
  return 0
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
"""


def snooze_key(key: str, value: str) -> str:
    if key not in SNOOZE_KEYS or not value:
        raise ValueError(f"a snooze names one of {', '.join(SNOOZE_KEYS)} and a value")
    return f"{SNOOZE_PREFIX}{key}:{value}"


def snooze_keys_of(view: Mapping[str, Any]) -> list[str]:
    return [snooze_key(k, str(view[k])) for k in SNOOZE_KEYS if view.get(k)]


async def snooze(redis: aioredis.Redis, key: str, value: str, seconds: int, by: str,
                 reason: str = "") -> None:
    if seconds <= 0 or not by:
        raise ValueError("a snooze needs a positive duration and who set it")
    until = datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()
    await redis.set(snooze_key(key, value),
                    json.dumps({"by": by, "reason": reason, "until": until}), ex=seconds)


async def review(redis: aioredis.Redis, site: str, order_id: str, action: str,
                 by: str, note: str = "") -> bool:
    """Publish a reviewer's verdict once; False when this order was already reviewed."""
    if action not in ("allow", "block"):
        raise ValueError("a reviewer allows or blocks")
    if not by:
        raise ValueError("a review records who made it")
    now = datetime.now(UTC)
    dec = Decision(order_id=order_id, action=action,  # type: ignore[arg-type]
                   rule=f"review:{by}"[:200], ts=now).to_fields()
    rec = json.dumps({"site": site, "orderId": order_id, "action": action, "by": by,
                      "note": note, "at": now.isoformat()})
    script = redis.register_script(_REVIEW)
    done = await script(keys=[REVIEW_PREFIX + order_id, decisions_stream(site)],
                        args=[rec, REVIEW_TTL_S, *[x for kv in dec.items() for x in kv]])
    return bool(done)


async def reviewed(redis: aioredis.Redis, order_id: str) -> dict[str, Any] | None:
    raw = await redis.get(REVIEW_PREFIX + order_id)
    return json.loads(raw) if raw else None
