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

from kameng.api.kinds import KEYS_OF_LABEL, SUBSITE_UID_LABEL
from kameng.contracts import pod
from kameng.kube.client import Kube, path_for

# The copy keeps the keys under the names they have in the site's Secret.
SESSION = pod.SESSION_SECRET.key
DATA_KEY = pod.DATA_KEYS.key


def backup_name(site: str) -> str:
    return pod.site_keys_copy(site)


@dataclass(frozen=True)
class SiteKeys:
    session_secret: str
    data_key: str
    # uid of the SubSite the copy was made for (label SUBSITE_UID_LABEL); None on a copy
    # made by an operator version that did not mark yet.
    owner: str | None = None

    def __repr__(self) -> str:
        return "SiteKeys(<redacted>)"


async def load(kube: Kube, namespace: str, site: str) -> SiteKeys | None:
    obj = await kube.get(path_for("v1", "Secret", backup_name(site), namespace), kind="Secret")
    if obj is None:
        return None
    data = obj.get("data") or {}
    try:
        return SiteKeys(base64.b64decode(data[SESSION]).decode(),
                        base64.b64decode(data[DATA_KEY]).decode(),
                        (obj["metadata"].get("labels") or {}).get(SUBSITE_UID_LABEL))
    except (KeyError, ValueError):
        return None


async def store(kube: Kube, namespace: str, site: str, keys: SiteKeys, uid: str
                ) -> SiteKeys:
    """Create the copy; if one appeared meanwhile, the existing copy wins and is
    returned, so two writers can never end up with different keys."""
    body = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": backup_name(site), "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "kameng",
                                KEYS_OF_LABEL: site, SUBSITE_UID_LABEL: uid}},
        "stringData": {SESSION: keys.session_secret, DATA_KEY: keys.data_key},
    }
    created = await kube.create(path_for("v1", "Secret", namespace=namespace), body)
    if created is None:
        existing = await load(kube, namespace, site)
        if existing is not None:
            return existing
    return keys


async def mark(kube: Kube, namespace: str, site: str, uid: str) -> None:
    """Hand the copy to the SubSite ``uid`` (an adoption, or a copy made unmarked)."""
    await kube.merge_patch(path_for("v1", "Secret", backup_name(site), namespace),
                           {"metadata": {"labels": {SUBSITE_UID_LABEL: uid}}}, kind="Secret")


async def drop(kube: Kube, namespace: str, site: str) -> None:
    await kube.delete(path_for("v1", "Secret", backup_name(site), namespace), kind="Secret")
