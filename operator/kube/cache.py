"""The watched children of every site, kept in memory."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kameng.children.context import SITE_LABEL

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: dict[str, Any]) -> Key:
    md = obj["metadata"]
    return obj["kind"], md.get("namespace") or "", md["name"]


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


class ChildCache:
    """Last known state of every managed child, fed by kopf's watches and by apply
    responses. Lets a converged reconcile decide "nothing to do" without a request."""

    def __init__(self) -> None:
        self._objs: dict[Key, dict[str, Any]] = {}
        self._by_site: dict[str, set[Key]] = defaultdict(set)

    def put(self, obj: dict[str, Any]) -> None:
        md = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
        slim = {**obj, "metadata": md}
        key = key_of(slim)
        old = self._objs.get(key)
        # A watch event older than an apply response must not roll the cache back.
        if old is not None and _rv(old) > _rv(slim) > 0:
            return
        self._objs[key] = slim
        site = (md.get("labels") or {}).get(SITE_LABEL)
        if site:
            self._by_site[site].add(key)

    def remove(self, key: Key) -> None:
        obj = self._objs.pop(key, None)
        if obj is not None:
            site = (obj["metadata"].get("labels") or {}).get(SITE_LABEL)
            if site:
                self._by_site[site].discard(key)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._objs.get(key)

    def of_site(self, site: str, kinds: set[str]) -> list[dict[str, Any]]:
        return [self._objs[k] for k in list(self._by_site.get(site, ())) if k[0] in kinds
                and k in self._objs]

    def forget_site(self, site: str) -> None:
        for key in list(self._by_site.pop(site, ())):
            self._objs.pop(key, None)

    def __len__(self) -> int:
        return len(self._objs)
