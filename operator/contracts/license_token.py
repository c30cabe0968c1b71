"""License-token contract: an Ed25519-signed compact token.

Format (three base64url segments without padding, like a JWS compact token)::

    base64url(header JSON) "." base64url(claims JSON) "." base64url(signature)

* header: ``{"alg": "EdDSA", "typ": "kameng-license+v1", "kid": <key id>}``
* signature: Ed25519 over the ASCII bytes ``header_segment "." claims_segment``
* claims: see :class:`LicenseClaims`; times are integer Unix seconds.

HQ's private key signs (operator); the storefront verifies offline with HQ's public key
(``hqPublicKey`` of the site config) and enforces :func:`evaluate_mode` even while the
operator is down.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from kameng.licensing.lifecycle import Terms, state_at

__all__ = [
    "TOKEN_TYPE",
    "LicenseClaims",
    "LicenseMode",
    "TokenError",
    "evaluate_mode",
    "generate_signing_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_b64",
    "public_key_to_pem",
    "sign_token",
    "verify_token",
]

TOKEN_TYPE = "kameng-license+v1"  # noqa: S105 - a media type, not a secret
LicenseMode = Literal["normal", "readOnly", "suspended"]
_MAX_TOKEN_LEN = 16_384  # refuse absurd inputs before decoding anything


class TokenError(ValueError):
    """The token is missing, malformed, signed by another key, or tampered with.

    Messages describe what is wrong, never the token or key material itself.
    """


class LicenseClaims(BaseModel):
    """Claims of a license token. ``nbf``/``exp``/``grace_until`` are aware UTC datetimes
    in Python and integer Unix seconds on the wire."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    site: str = Field(min_length=1)
    plan: Literal["basic", "flagship"] = "basic"
    categories: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    nbf: datetime
    exp: datetime
    grace_until: datetime = Field(alias="graceUntil")
    suspended: bool = False
    seq: int = Field(default=0, ge=0)
    # When the license becomes ExpiringSoon (the License's own lead time), so the shop's
    # banner and HQ read the same life cycle as the operator. Optional: older tokens
    # lack it and fall back to the default lead.
    warn_at: datetime | None = Field(default=None, alias="warnAt")

    @field_serializer("nbf", "exp", "grace_until")
    def _epoch(self, v: datetime) -> int:
        return int(_utc(v).timestamp())

    @field_serializer("warn_at")
    def _epoch_or_none(self, v: datetime | None) -> int | None:
        return None if v is None else int(_utc(v).timestamp())

    def allows(self, category: str, region: str | None = None) -> bool:
        """Whether the license scope covers ``category`` (and ``region`` if given)."""
        if category not in self.categories:
            return False
        return region is None or not region or region in self.regions


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(seg: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("token segment is not base64url") from exc


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Short stable key id: first 16 hex chars of SHA-256 of the raw public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(_raw_public(pub)).hexdigest()[:16]


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_to_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Raw 32-byte public key as standard base64 (the compact ``hqPublicKey`` form)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(_raw_public(pub)).decode("ascii")


def load_private_key(data: bytes | str) -> Ed25519PrivateKey:
    """PKCS#8 PEM → private key."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise TokenError("not a PEM Ed25519 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise TokenError("private key is not Ed25519")
    return key


def load_public_key(data: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
    """PEM (SubjectPublicKeyInfo) or base64 of the raw 32 bytes → public key."""
    if isinstance(data, Ed25519PublicKey):
        return data
    text = data.decode() if isinstance(data, bytes) else data
    text = text.strip()
    if not text:
        raise TokenError("public key is empty")
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise TokenError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise TokenError("public key is not Ed25519")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("public key is neither PEM nor base64") from exc
    if len(raw) != 32:
        raise TokenError("raw Ed25519 public key must be 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_token(claims: LicenseClaims, private_key: Ed25519PrivateKey) -> str:
    header = {"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": key_id(private_key)}
    h = _b64e(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
    # exclude_none: a token without warnAt keeps the bytes it had before the claim existed.
    body = claims.model_dump(mode="json", by_alias=True, exclude_none=True)
    p = _b64e(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    sig = private_key.sign(f"{h}.{p}".encode("ascii"))
    return f"{h}.{p}.{_b64e(sig)}"


def verify_token(
    token: str | None,
    public_key: Ed25519PublicKey | str | bytes | Iterable[Ed25519PublicKey],
    now: datetime | None = None,
) -> LicenseClaims:
    """Verify signature and structure; return the claims.

    Does not judge time: a correctly signed but expired (or not-yet-valid) license
    verifies, and :func:`evaluate_mode` decides what it means, so callers have one
    decision point. ``now`` is accepted for interface stability only.
    Several public keys may be given (key rotation); the header ``kid`` selects one.
    """
    del now  # time is judged by evaluate_mode, see docstring
    if not token or not isinstance(token, str):
        raise TokenError("license token is missing")
    token = token.strip()
    if len(token) > _MAX_TOKEN_LEN:
        raise TokenError("license token is too long")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("license token is malformed (expected 3 segments)")
    h, p, s = parts
    try:
        header = json.loads(_b64d(h))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenError("license token header is not JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise TokenError("license token algorithm is not EdDSA")
    if header.get("typ") != TOKEN_TYPE:
        raise TokenError("license token type is not " + TOKEN_TYPE)

    if isinstance(public_key, Ed25519PublicKey | str | bytes):
        keys = [load_public_key(public_key)]
    else:
        keys = [load_public_key(k) for k in public_key]
    by_kid = {key_id(k): k for k in keys}
    key = by_kid.get(str(header.get("kid", "")))
    if key is None:
        raise TokenError("license token is signed by an unknown key")
    try:
        key.verify(_b64d(s), f"{h}.{p}".encode("ascii"))
    except InvalidSignature as exc:
        raise TokenError("license token signature is invalid (tampered?)") from exc
    try:
        return LicenseClaims.model_validate_json(_b64d(p))
    except ValidationError as exc:
        raise TokenError(f"license token claims are invalid: {exc.error_count()} errors") from exc


def evaluate_mode(claims: LicenseClaims, now: datetime | None = None) -> LicenseMode:
    """What the shop may do under ``claims`` at ``now``: the mode of the license's
    life-cycle state (:mod:`kameng.licensing.lifecycle`, the one place it is computed).

    Active and ExpiringSoon → ``normal``; Grace → ``readOnly``; Pending, Expired and
    Suspended → ``suspended``.
    """
    return mode_until(claims, now or datetime.now(UTC))[0]


def mode_until(claims: LicenseClaims, now: datetime) -> tuple[LicenseMode, datetime | None]:
    """:func:`evaluate_mode` at ``now`` and until when it holds by time alone (None:
    forever): a shop asking on every request computes it once per change."""
    cycle = state_at(Terms.from_claims(claims), now)
    return cycle.mode, cycle.next_change
