"""List-then-watch of one kind with a SERVER-SIDE label selector.

kopf filters labels client-side: it lists and watches every Secret and ConfigMap of
the cluster and drops what does not match, so the operator's memory and CPU grow with
objects it does not own. The API server can filter instead (``labelSelector``): then
only the operator's own children ever reach this process.

The loop is the informer's: a paged LIST gives the state and a resourceVersion; a
WATCH from there streams changes (with bookmarks, so a reconnect resumes from a recent
version); a ``410 Gone`` (the version was compacted away) means LIST again, and objects
that vanished meanwhile are reported as deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .client import Kube, KubeError

log = logging.getLogger(__name__)
# (event type or None for the initial listing, object); "DELETED" for a vanished object.
Handler = Callable[[str | None, dict[str, Any]], Awaitable[None] | None]
PAGE = 500
# The server ends a watch after this long; we then resume from the last version seen.
WATCH_SECONDS = 290
RETRY_PAUSE = 2.0


class Gone(Exception):
    """The resourceVersion is too old: LIST again."""


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return md.get("namespace") or "", md.get("name") or ""


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


async def _call(handler: Handler, type_: str | None, obj: dict[str, Any]) -> None:
    result = handler(type_, obj)
    if result is not None:
        await result


async def list_all(kube: Kube, path: str, selector: str) -> tuple[list[dict[str, Any]], str]:
    """Every object matching ``selector``, in pages, and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    params = {"labelSelector": selector, "limit": str(PAGE)}
    while True:
        resp = await kube.raw_get(path, params)
        items += resp.get("items") or []
        meta = resp.get("metadata") or {}
        if not meta.get("continue"):
            return items, str(meta.get("resourceVersion") or "")
        params = {**params, "continue": meta["continue"]}


class Watcher:
    """Keeps ``handler`` informed of every object of one kind matching ``selector``."""

    def __init__(self, kube: Kube, api_version: str, kind: str, path: str, selector: str,
                 handler: Handler) -> None:
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.path, self.selector, self.handler = path, selector, handler
        # Labels and resourceVersion of every object seen: one that vanished or changed
        # while no watch was open is reported (with its labels) after the next listing.
        self.known: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
        self.synced = asyncio.Event()  # set after the first complete listing

    def _typed(self, obj: dict[str, Any]) -> dict[str, Any]:
        # List items carry no apiVersion/kind; the cache keys objects by kind.
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        return obj

    async def relist(self) -> str:
        items, version = await list_all(self.kube, self.path, self.selector)
        seen: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
        first = not self.synced.is_set()
        for obj in items:
            key = _key(self._typed(obj))
            seen[key] = _labels(obj), _version(obj)
            before = self.known.get(key)
            # The first listing is the starting state; later ones report what changed
            # while no watch was open as if it had been watched.
            changed = not first and (before is None or before[1] != seen[key][1])
            await _call(self.handler, ("ADDED" if before is None else "MODIFIED")
                        if changed else None, obj)
        for (ns, name), (labels, _) in self.known.items():
            if (ns, name) not in seen:  # gone while we were not watching
                await _call(self.handler, "DELETED", {
                    "apiVersion": self.api_version, "kind": self.kind,
                    "metadata": {"namespace": ns or None, "name": name, "labels": labels}})
        self.known = seen
        self.synced.set()
        return version

    async def watch_from(self, version: str) -> str:
        """One WATCH request; returns the last version seen. Raises :class:`Gone`."""
        params = {"labelSelector": self.selector, "watch": "true", "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        async for line in self.kube.stream_lines(self.path, params):
            event = orjson.loads(line)
            type_, obj = event.get("type"), event.get("object") or {}
            if type_ == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise KubeError(int(obj.get("code") or 0), str(obj.get("reason") or "Error"))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if type_ == "BOOKMARK":
                continue
            self._typed(obj)
            if type_ == "DELETED":
                self.known.pop(_key(obj), None)
            else:
                self.known[_key(obj)] = _labels(obj), _version(obj)
            await _call(self.handler, type_, obj)
        return version

    async def run(self) -> None:
        version = ""
        while True:
            try:
                if not version:
                    version = await self.relist()
                version = await self.watch_from(version)
            except Gone:
                version = ""
            except KubeError as exc:
                if exc.status == 410:  # the version was compacted away: list again
                    version = ""
                    continue
                log.warning("watch of %s (%s) refused: %s; retrying", self.kind,
                            self.selector, exc)
                await asyncio.sleep(RETRY_PAUSE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection, a restarting API server
                log.warning("watch of %s (%s) interrupted: %s; resuming", self.kind,
                            self.selector, exc)
                await asyncio.sleep(RETRY_PAUSE)
