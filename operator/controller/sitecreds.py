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


async def publish(kube: Kube, namespace: str, entry: SiteCredential) -> None:
    """Write one site's entry (creating the registry Secret on first use)."""
    value = base64.b64encode(entry.to_json().encode()).decode()
    try:
        await kube.merge_patch(_path(namespace), {"data": {entry.site: value}}, kind="Secret")
        return
    except KubeError as exc:
        if exc.status != 404:
            raise
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": REGISTRY_SECRET, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "kameng",
                                    "app.kubernetes.io/part-of": "kameng"}},
            "data": {entry.site: value}}
    if await kube.create(path_for("v1", "Secret", namespace=namespace), body) is None:
        # Another writer created it meanwhile: add this site's key to theirs.
        await kube.merge_patch(_path(namespace), {"data": {entry.site: value}}, kind="Secret")


async def revoke(kube: Kube, namespace: str, site: str) -> None:
    """Remove the site's entry: HQ refuses its token from the moment HQ sees the file go."""
    try:
        await kube.merge_patch(_path(namespace), {"data": {site: None}}, kind="Secret")
    except KubeError as exc:
        if exc.status != 404:
            raise
