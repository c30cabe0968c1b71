"""The operator's own children, watched by a server-side label selector.

Each child kind is listed and watched with ``app.kubernetes.io/managed-by=kameng``, so
the API server sends only what the operator made: memory and CPU do not grow with the
Secrets and ConfigMaps of everyone else in the cluster (kopf's ``labels=`` filter is
applied client-side, after every object has been received and parsed). Events feed the
child cache and wake the site the child belongs to.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kameng.api.kinds import CHILDREN
from kameng.children.context import MANAGED_BY, SITE_LABEL
from kameng.kube.cache import key_of
from kameng.kube.client import path_for
from kameng.kube.watch import Watcher

from .runtime import Runtime

log = logging.getLogger(__name__)
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def child_seen(rt: Runtime, type_: str | None, raw: dict[str, Any]) -> None:
    """One watch event (``type_`` None: the listing, which changes nothing)."""
    if type_ == "DELETED":
        rt.cache.remove(key_of(raw))
    else:
        rt.cache.put(raw)
    site = (raw["metadata"].get("labels") or {}).get(SITE_LABEL)
    if site and type_ is not None:
        log.debug("wake %s: %s %s/%s", site, type_, raw["kind"], raw["metadata"]["name"])
        rt.triggers.poke(site, "child")


def watchers(rt: Runtime) -> list[Watcher]:
    return [Watcher(rt.kube, res.api_version, res.kind, path_for(res.api_version, res.kind),
                    SELECTOR, lambda t, o: child_seen(rt, t, o)) for res in CHILDREN]


def start(rt: Runtime) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(w.run(), name=f"watch-{w.kind}") for w in watchers(rt)]
