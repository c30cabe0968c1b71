"""A copy of each site's keys in the operator's namespace.

The data-encryption key protects card keys stored in the site's database. If a person
deletes the site's namespace (or its ``storefront-keys`` Secret), regenerating the key
would make that data unreadable, so the operator keeps a copy next to the HQ keys and
restores from it. The copy is removed only when the database itself is dropped
(``reclaimPolicy: Delete``); with ``Retain`` it stays with the retained data.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from kameng.api.kinds import KEYS_OF_LABEL
from kameng.contracts import pod
from kameng.kube.client import Kube, path_for

# The copy keeps the keys under the names they have in the site's Secret.
SESSION = pod.SESSION_SECRET.key
DATA_KEY = pod.DATA_KEYS.key


def backup_name(site: str) -> str:
    return f"kameng-keys-{site}"


@dataclass(frozen=True)
class SiteKeys:
    session_secret: str
    data_key: str

    def __repr__(self) -> str:
        return "SiteKeys(<redacted>)"


async def load(kube: Kube, namespace: str, site: str) -> SiteKeys | None:
    obj = await kube.get(path_for("v1", "Secret", backup_name(site), namespace), kind="Secret")
    if obj is None:
        return None
    data = obj.get("data") or {}
    try:
        return SiteKeys(base64.b64decode(data[SESSION]).decode(),
                        base64.b64decode(data[DATA_KEY]).decode())
    except (KeyError, ValueError):
        return None


async def store(kube: Kube, namespace: str, site: str, keys: SiteKeys) -> SiteKeys:
    """Create the copy; if one appeared meanwhile, the existing copy wins and is
    returned, so two writers can never end up with different keys."""
    body = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": backup_name(site), "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "kameng",
                                KEYS_OF_LABEL: site}},
        "stringData": {SESSION: keys.session_secret, DATA_KEY: keys.data_key},
    }
    created = await kube.create(path_for("v1", "Secret", namespace=namespace), body)
    if created is None:
        existing = await load(kube, namespace, site)
        if existing is not None:
            return existing
    return keys


async def drop(kube: Kube, namespace: str, site: str) -> None:
    await kube.delete(path_for("v1", "Secret", backup_name(site), namespace), kind="Secret")
