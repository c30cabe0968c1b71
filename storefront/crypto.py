"""Data encryption (AES-256-GCM with key ids) and password hashing (argon2id).

Ciphertext format: ``<kid>:<base64(nonce || ciphertext+tag)>`` — the key id travels
beside the ciphertext so data keys can rotate: new writes use the first key, old rows
stay readable while their key is still configured.
"""

from __future__ import annotations

import base64
import binascii
import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CryptoError", "DataCipher", "hash_password", "verify_password"]

_hasher = PasswordHasher()


class CryptoError(ValueError):
    """Bad key material or undecryptable data (message carries no secret)."""


class DataCipher:
    def __init__(self, keys_spec: str) -> None:
        self._keys: dict[str, AESGCM] = {}
        self.current_kid = ""
        for item in (p.strip() for p in keys_spec.split(",")):
            if not item:
                continue
            kid, sep, b64 = item.partition(":")
            if not sep or not kid:
                raise CryptoError("data key entries must be 'kid:base64'")
            try:
                raw = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CryptoError(f"data key {kid} is not base64") from exc
            if len(raw) != 32:
                raise CryptoError(f"data key {kid} must be 32 bytes (AES-256)")
            self._keys[kid] = AESGCM(raw)
            self.current_kid = self.current_kid or kid
        if not self._keys:
            raise CryptoError("no data key configured")

    @staticmethod
    def generate_spec(kid: str = "k1") -> str:
        return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"

    def encrypt(self, plaintext: str, aad: str = "") -> str:
        nonce = os.urandom(12)
        ct = self._keys[self.current_kid].encrypt(nonce, plaintext.encode(), aad.encode())
        return f"{self.current_kid}:{base64.b64encode(nonce + ct).decode()}"

    def decrypt(self, token: str, aad: str = "") -> str:
        kid, sep, b64 = token.partition(":")
        key = self._keys.get(kid)
        if not sep or key is None:
            raise CryptoError("ciphertext key id is unknown")
        try:
            blob = base64.b64decode(b64, validate=True)
            return key.decrypt(blob[:12], blob[12:], aad.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise CryptoError("ciphertext cannot be decrypted") from exc


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        # Still spend the time so unknown users are not distinguishable by latency.
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
