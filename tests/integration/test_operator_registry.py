"""The site-credential registry's writer (a group commit) on a real API server: entries
published at once travel in few patches, every caller returns only once its entry is
stored, the latest value of a site wins, a removal of an unknown registry is no error,
and a failing patch reaches every caller of its batch."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime

import pytest

from kameng.contracts.hq_auth import REGISTRY_SECRET, SiteCredential
from kameng.controller.sitecreds import Registry, desired_entry
from kameng.kube.client import Kube, KubeError, path_for


def _entry(site: str, token: str, state: str = "active") -> SiteCredential:
    return desired_entry(site, token, None, state, "", [f"https://{site}.example"],  # type: ignore[arg-type]
                         datetime(2026, 12, 2, tzinfo=UTC))


async def _registry_data(kube: Kube, ns: str) -> dict[str, SiteCredential]:
    secret = await kube.get(path_for("v1", "Secret", REGISTRY_SECRET, ns), kind="Secret")
    return {k: SiteCredential.from_json(base64.b64decode(v))
            for k, v in ((secret or {}).get("data") or {}).items()}


@pytest.fixture
async def namespace(devenv: dict[str, str]):
    kube = Kube.from_environment(devenv["kubeconfig"])
    ns = f"registry-{uuid.uuid4().hex[:6]}"
    await kube.create(path_for("v1", "Namespace"), {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": ns}})
    try:
        yield kube, ns
    finally:
        await kube.delete(path_for("v1", "Namespace", ns), kind="Namespace")
        await kube.close()


async def test_entries_published_together_share_patches(namespace) -> None:
    kube, ns = namespace
    registry = Registry(kube, ns)
    # Removing from a registry that does not exist yet is nothing to do.
    await registry.revoke("nobody")
    assert await _registry_data(kube, ns) == {}
    sites = [f"s{i:03d}" for i in range(120)]
    await asyncio.gather(*(registry.publish(_entry(s, f"token-{s}")) for s in sites))
    stored = await _registry_data(kube, ns)
    assert set(stored) == set(sites)
    assert stored["s007"] == _entry("s007", "token-s007")
    # 120 callers at once: the first patch goes alone, the rest queue behind it.
    assert registry.patches <= 4, registry.patches
    # The same site twice in one batch: the later value is what is stored; a removal
    # in the same round as other sites' updates removes only that site.
    before = registry.patches
    await asyncio.gather(registry.publish(_entry("s001", "a")),
                         registry.publish(_entry("s001", "b", "suspended")),
                         registry.revoke("s002"), registry.publish(_entry("s003", "c")))
    stored = await _registry_data(kube, ns)
    assert stored["s001"] == _entry("s001", "b", "suspended")
    assert "s002" not in stored
    assert stored["s003"] == _entry("s003", "c")
    assert len(stored) == 119
    assert registry.patches - before <= 2


async def test_a_failed_patch_reaches_every_caller_of_its_batch(namespace) -> None:
    kube, ns = namespace
    # A namespace that does not exist: the create after the 404 fails for the whole batch.
    registry = Registry(kube, f"{ns}-missing")
    results = await asyncio.gather(*(registry.publish(_entry(f"x{i}", "t")) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, KubeError) for r in results), results
    # The writer survives its failure: once the namespace exists, the next batch is written.
    await kube.create(path_for("v1", "Namespace"), {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": f"{ns}-missing"}})
    try:
        await registry.publish(_entry("after", "t"))
        assert set(await _registry_data(kube, f"{ns}-missing")) == {"after"}
    finally:
        await kube.delete(path_for("v1", "Namespace", f"{ns}-missing"), kind="Namespace")
