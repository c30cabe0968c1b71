"""HQ's license-signing key and master secret (card-key fingerprints; sites' API tokens
are random per site, see :mod:`.sitecreds`).

They live in one Secret in the operator's namespace, created on first start if missing
and never overwritten: re-generating the key would invalidate every issued token.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kameng.contracts import pod
from kameng.contracts.license_token import (
    generate_signing_key,
    load_private_key,
    private_key_to_pem,
    public_key_to_b64,
)
from kameng.kube.client import Kube, path_for

log = logging.getLogger(__name__)
SIGNING_KEY = pod.HQ_SIGNING_KEY.key
PUBLIC_KEY = pod.HQ_PUBLIC_KEY.key
MASTER_SECRET = pod.HQ_MASTER_SECRET.key


@dataclass(frozen=True)
class HqKeys:
    signing_key: Ed25519PrivateKey
    public_key_b64: str
    master_secret: str

    def __repr__(self) -> str:
        return f"HqKeys(public_key={self.public_key_b64!r})"


def _decode(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


async def load_or_create(kube: Kube, namespace: str, name: str) -> HqKeys:
    path = path_for("v1", "Secret", name, namespace)
    existing = await kube.get(path, kind="Secret")
    if existing is None:
        if await kube.get(path_for("v1", "Namespace", namespace), kind="Namespace") is None:
            await kube.create(path_for("v1", "Namespace"), {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        key = generate_signing_key()
        body = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "kameng"}},
            "stringData": {SIGNING_KEY: private_key_to_pem(key).decode(),
                           PUBLIC_KEY: public_key_to_b64(key),
                           MASTER_SECRET: secrets.token_hex(32)},
        }
        # Created, not applied: with two replicas starting at once, the loser's 409
        # sends it to read the winner's key instead of replacing it.
        if await kube.create(path_for("v1", "Secret", namespace=namespace), body):
            log.info("created HQ signing key in %s/%s", namespace, name)
        existing = await kube.get(path, kind="Secret")
        if existing is None:
            raise RuntimeError(f"HQ key Secret {namespace}/{name} vanished after creation")
    data = existing.get("data") or {}
    key = load_private_key(_decode(data, SIGNING_KEY))
    return HqKeys(signing_key=key, public_key_b64=public_key_to_b64(key),
                  master_secret=_decode(data, MASTER_SECRET))
