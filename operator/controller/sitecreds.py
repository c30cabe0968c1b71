"""Each site's HQ API credential, and the registry HQ checks it against
(:mod:`kameng.contracts.hq_auth`).

The token is random, minted here, and lives only in the site's ``storefront-keys``
Secret; the registry Secret in the operator's namespace holds its SHA-256, its state and
the site's public URLs, one key per site. Writes are JSON merge patches of one key, so
publishing, suspending, rotating or revoking one site never touches another's entry.

* suspended (the License's mode is ``suspended``): the entry says ``suspended`` at once,
  before any child is applied; HQ then lets the site only refund.
* deleted: :func:`revoke` removes the entry, first thing in the deletion.
* rotation: a new value of the SubSite annotation ``kameng.io/rotate-credentials`` mints a
  new token once; the entry records the value it answered, so the request is acted on
  exactly once, across restarts.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from kameng.contracts.hq_auth import (
    REGISTRY_SECRET,
    CredentialError,
    CredentialState,
    SiteCredential,
    new_site_api_token,
    token_digest,
)
from kameng.kube.client import Kube, KubeError, path_for

log = logging.getLogger(__name__)


def choose_token(existing: str | None, entry: SiteCredential | None, rotation: str
                 ) -> tuple[str, bool]:
    """(the site's token, minted now). The Secret's token is kept unless a rotation is
    requested that the published entry has not answered yet."""
    rotate = entry is not None and rotation != entry.rotation and bool(rotation)
    if existing and not rotate:
        return existing, False
    return new_site_api_token(), True


def desired_entry(site: str, token: str, previous: SiteCredential | None,
                  state: CredentialState, rotation: str, urls: list[str], now: datetime,
                  scope: tuple[list[str], list[str]] | None = None) -> SiteCredential:
    """``scope``: the License's (categories, regions) now, which HQ enforces on top of
    the token's (see :class:`SiteCredential`)."""
    digest = token_digest(token)
    created = previous.created_at if previous is not None and previous.sha256 == digest \
        else now.isoformat(timespec="seconds")
    cats, regions = (sorted(scope[0]), sorted(scope[1])) if scope is not None else (None, None)
    return SiteCredential(site=site, sha256=digest, createdAt=created, state=state,
                          rotation=rotation, urls=urls, categories=cats, regions=regions)


def registered_urls(site_url: str, shop_url: str) -> list[str]:
    """The site's public URLs HQ accepts payment URLs on: its domain's, and the shop URL
    annotation when it is an absolute http(s) URL (anything else is ignored, and said)."""
    urls = [site_url]
    if shop_url:
        parts = urlsplit(shop_url)
        if parts.scheme in ("http", "https") and parts.hostname and "@" not in parts.netloc:
            urls.append(f"{parts.scheme}://{parts.netloc}")
        else:
            log.warning("ignoring shop URL annotation %r: not an http(s) origin", shop_url[:100])
    return urls


def _path(namespace: str) -> str:
    return path_for("v1", "Secret", REGISTRY_SECRET, namespace)


def entry_of(secret: dict[str, Any] | None, site: str) -> SiteCredential | None:
    raw = ((secret or {}).get("data") or {}).get(site)
    if not raw:
        return None
    try:
        return SiteCredential.from_json(base64.b64decode(raw))
    except (CredentialError, ValueError):
        log.warning("registry entry of %s is unreadable; it will be rewritten", site)
        return None


async def load(kube: Kube, namespace: str, site: str) -> SiteCredential | None:
    return entry_of(await kube.get(_path(namespace), kind="Secret"), site)


class Registry:
    """The writer of the registry Secret: a group commit. While one merge patch is in
    flight, entries queue; the next patch carries all of them (the latest value of each
    site), and each caller returns when the patch carrying its entry succeeded (or raises
    what it raised).

    Why: the registry is one Secret with an entry per site, and every patch makes the API
    server store it whole and send it whole to each watcher. A patch per site made a batch
    of N sites move O(N²) bytes: ~250 MB into etcd and again to every watch at 1,000
    sites. Batching costs a caller at most one patch's wait."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace
        # site -> (base64 entry, or None to remove it; the callers waiting for it)
        self._queued: dict[str, tuple[str | None, list[asyncio.Future[None]]]] = {}
        self._writer: asyncio.Task[None] | None = None
        self.patches = 0  # merge patches sent (tests, and the batching it shows)

    async def publish(self, entry: SiteCredential) -> None:
        """Write one site's entry (creating the registry Secret on first use)."""
        await self._write(entry.site, base64.b64encode(entry.to_json().encode()).decode())

    async def revoke(self, site: str) -> None:
        """Remove the site's entry: HQ refuses its token from the moment HQ sees the file
        go."""
        await self._write(site, None)

    async def _write(self, site: str, value: str | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        _, waiting = self._queued.get(site, (None, []))
        self._queued[site] = (value, [*waiting, done])
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, {}
            waiting = [done for _, futures in batch.values() for done in futures]
            try:
                await self._patch({site: value for site, (value, _) in batch.items()})
            except Exception as exc:  # handed to every caller of this batch
                for done in waiting:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for done in waiting:
                    if not done.done():
                        done.set_result(None)
            finally:  # the writer cancelled (shutdown): so are its callers
                for done in waiting:
                    done.cancel()

    async def _patch(self, data: dict[str, str | None]) -> None:
        path = _path(self._namespace)
        self.patches += 1
        try:
            await self._kube.merge_patch(path, {"data": data}, kind="Secret")
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        present = {site: value for site, value in data.items() if value is not None}
        if not present:
            return  # only removals, and no registry: nothing to remove
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": REGISTRY_SECRET, "namespace": self._namespace,
                             "labels": {"app.kubernetes.io/managed-by": "kameng",
                                        "app.kubernetes.io/part-of": "kameng"}},
                "data": present}
        if await self._kube.create(path_for("v1", "Secret", namespace=self._namespace),
                                   body) is None:
            # Another writer created it meanwhile: add these entries to theirs.
            await self._kube.merge_patch(path, {"data": data}, kind="Secret")
