"""Kubernetes Events about kameng objects, posted once per transition and aggregated the
way the kubelet's recorder does (client-go's ``EventCorrelator``):

* an Event identical to one posted before (same object, type, reason and message) is not
  a new object: the existing Event's ``count`` and ``lastTimestamp`` are bumped;
* per involved object a token bucket (burst 25, one token every 5 minutes, client-go's
  ``EventSourceObjectSpamFilter`` defaults) drops the excess, so a site that flaps cannot
  turn the Event store into its log.

The correlator lives in memory, one per client (:class:`Kube`): a restarted operator
posts a new Event the first time again, which is what the kubelet does too.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kameng.api.common import API_VERSION
from kameng.api.resources import SUBSITE

from .client import Kube, KubeError, path_for

log = logging.getLogger(__name__)
COMPONENT = "kameng-operator"
# Events about cluster-scoped objects go to "default", where kubectl describe finds them.
EVENT_NAMESPACE = "default"
# client-go's defaults (tools/record/events_cache.go).
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
# Kept Event keys and buckets; the oldest are forgotten first (client-go keeps 4096).
CACHE_SIZE = 4096


@dataclass
class _Posted:
    name: str
    count: int


@dataclass
class _Bucket:
    tokens: float
    at: float


class Correlator:
    """Deduplication and rate limit of one client's Events (see the module doc)."""

    def __init__(self, burst: int = SPAM_BURST, refill_seconds: float = SPAM_REFILL_SECONDS,
                 clock: Any = time.monotonic) -> None:
        self._burst = burst
        self._refill = refill_seconds
        self._clock = clock
        self._posted: OrderedDict[tuple[str, ...], _Posted] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, obj_key: str) -> bool:
        """Take a token of the object's bucket; False when it is empty."""
        now = self._clock()
        b = self._buckets.pop(obj_key, None) or _Bucket(float(self._burst), now)
        b.tokens = min(float(self._burst), b.tokens + (now - b.at) / self._refill)
        b.at = now
        self._buckets[obj_key] = b
        while len(self._buckets) > CACHE_SIZE:
            self._buckets.popitem(last=False)
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def seen(self, key: tuple[str, ...]) -> _Posted | None:
        hit = self._posted.get(key)
        if hit is not None:
            self._posted.move_to_end(key)
        return hit

    def remember(self, key: tuple[str, ...], posted: _Posted) -> None:
        self._posted[key] = posted
        self._posted.move_to_end(key)
        while len(self._posted) > CACHE_SIZE:
            self._posted.popitem(last=False)

    def forget(self, key: tuple[str, ...]) -> None:
        self._posted.pop(key, None)


# One correlator per client, released with it (a test's client must not share counts
# with the next test's).
_CORRELATORS: weakref.WeakKeyDictionary[Kube, Correlator] = weakref.WeakKeyDictionary()


def correlator(kube: Kube) -> Correlator:
    found = _CORRELATORS.get(kube)
    if found is None:
        found = _CORRELATORS[kube] = Correlator()
    return found


def _stamp() -> tuple[str, str]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now, now[:19] + "Z"


async def post(kube: Kube, obj: dict[str, Any], type_: str, reason: str,
               message: str) -> None:
    """Post (or bump) an Event about ``obj``. Best effort: never raises."""
    md = obj.get("metadata", {})
    reason, message = reason[:128], message[:1024]
    kind = obj.get("kind", SUBSITE.kind)
    obj_key = f"{kind}/{md.get('namespace') or ''}/{md.get('name')}/{md.get('uid')}"
    key = (obj_key, type_, reason, message)
    corr = correlator(kube)
    if not corr.allow(obj_key):
        log.debug("event %s about %s dropped by the rate limit", reason, obj_key)
        return
    now, now_s = _stamp()
    previous = corr.seen(key)
    if previous is not None:
        try:
            await kube.merge_patch(
                path_for("v1", "Event", previous.name, EVENT_NAMESPACE),
                {"count": previous.count + 1, "lastTimestamp": now_s}, kind="Event")
            previous.count += 1
            return
        except KubeError as exc:
            # Gone (Events expire after an hour by default): a new one below.
            corr.forget(key)
            if exc.status != 404:
                log.warning("could not update event %s: %s", reason, exc)
                return
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{md.get('name')}.{uuid.uuid4().hex[:12]}",
                     "namespace": EVENT_NAMESPACE},
        "involvedObject": {"apiVersion": obj.get("apiVersion", API_VERSION),
                           "kind": kind, "name": md.get("name"), "uid": md.get("uid")},
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("POD_NAME", socket.gethostname())[:128],
        "firstTimestamp": now_s,
        "lastTimestamp": now_s,
        "eventTime": now,
        "action": "Reconcile",
        "count": 1,
    }
    try:
        created = await kube.create(path_for("v1", "Event", namespace=EVENT_NAMESPACE), body)
    except KubeError as exc:  # an Event is best effort; never fail a reconcile for it
        log.warning("could not post event %s: %s", reason, exc)
        return
    if created is not None:
        corr.remember(key, _Posted(body["metadata"]["name"], 1))
