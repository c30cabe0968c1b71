"""HQ's export key pair: X25519, in the Secret ``kameng-export-key`` of the operator's
namespace (``public-key``, ``private-key``, raw 32 bytes in base64).

Created on first use and never replaced: a new pair would make every archive made
before unreadable. Whoever only exports needs the public key; ``kameng site restore``
reads the private key (or takes it from a file HQ keeps offline, after which the
private key may be removed from the cluster: exports keep working).
"""

from __future__ import annotations

import base64

from kameng.kube.client import Kube, path_for

from . import envelope

SECRET = "kameng-export-key"  # noqa: S105 - the Secret's name
PUBLIC, PRIVATE = "public-key", "private-key"


async def _get(kube: Kube, namespace: str) -> dict[str, str] | None:
    obj = await kube.get(path_for("v1", "Secret", SECRET, namespace), kind="Secret")
    if obj is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


async def public_key(kube: Kube, namespace: str) -> str:
    data = await _get(kube, namespace)
    if data is None:
        key = envelope.generate()
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": namespace,
                             "labels": {"app.kubernetes.io/part-of": "kameng"}},
                "stringData": {PUBLIC: envelope.public_b64(key),
                               PRIVATE: envelope.private_b64(key)}}
        # Created, not applied: of two creators the loser reads the winner's pair.
        await kube.create(path_for("v1", "Secret", namespace=namespace), body)
        data = await _get(kube, namespace)
    if not data or not data.get(PUBLIC):
        raise envelope.EnvelopeError(f"Secret {namespace}/{SECRET} has no {PUBLIC}")
    return data[PUBLIC]


async def private_key(kube: Kube, namespace: str) -> str:
    data = await _get(kube, namespace)
    if not data or not data.get(PRIVATE):
        raise envelope.EnvelopeError(
            f"Secret {namespace}/{SECRET} has no {PRIVATE}; pass --key-file with HQ's "
            "offline copy of the export private key")
    return data[PRIVATE]
