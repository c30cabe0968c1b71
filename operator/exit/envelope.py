"""Encryption of an archive for HQ: X25519 + HKDF-SHA256 + chunked AES-256-GCM.

Public-key, so whatever exports (the operator, ``kubectl kameng export-data``) needs only
HQ's public key, and only the holder of HQ's private key (``kameng site restore``) can
read an archive. Streamed in chunks so a large site never sits in memory at once.

Format (all integers big-endian)::

    magic "KMEXIT1\\n" | ephemeral X25519 public key (32) | salt (16)
    then chunks:  length (4) | AES-GCM(nonce = prefix(4) || counter(7) || last(1),
                                       chunk, aad = header)

The last chunk carries ``last = 1``: a truncated archive (chunks cut off at the end) or
reordered chunks fail to decrypt, like any flipped byte.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"KMEXIT1\n"
CHUNK = 1 << 20
_HEADER = len(MAGIC) + 32 + 16


class EnvelopeError(ValueError):
    """Not an archive for this key, or altered (the message never carries key material)."""


def generate() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_b64(key: X25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def private_b64(key: X25519PrivateKey) -> str:
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def load_public(b64: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))
    except ValueError as exc:
        raise EnvelopeError("HQ's export public key is not 32 bytes of base64") from exc


def load_private(b64: str) -> X25519PrivateKey:
    try:
        return X25519PrivateKey.from_private_bytes(base64.b64decode(b64, validate=True))
    except ValueError as exc:
        raise EnvelopeError("HQ's export private key is not 32 bytes of base64") from exc


def _content_key(shared: bytes, salt: bytes, eph: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                info=b"kameng exit archive v1" + eph).derive(shared)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(7, "big") + (b"\x01" if last else b"\x00")


def _chunks(src: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    cur = src.read(CHUNK)
    while True:
        nxt = src.read(CHUNK)
        yield cur, not nxt
        if not nxt:
            return
        cur = nxt


def encrypt(src: BinaryIO, dst: BinaryIO, recipient: X25519PublicKey) -> None:
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    salt = os.urandom(16)
    header = MAGIC + eph_pub + salt
    aead = AESGCM(_content_key(eph.exchange(recipient), salt, eph_pub))
    prefix = os.urandom(4)
    dst.write(header)
    for i, (chunk, last) in enumerate(_chunks(src)):
        ct = aead.encrypt(_nonce(prefix, i, last), chunk, header)
        dst.write(struct.pack(">I", len(ct)) + prefix + ct)


def decrypt(src: BinaryIO, dst: BinaryIO, key: X25519PrivateKey) -> None:
    header = src.read(_HEADER)
    if len(header) != _HEADER or not header.startswith(MAGIC):
        raise EnvelopeError("not a Kameng exit archive (bad header)")
    eph_pub, salt = header[len(MAGIC):len(MAGIC) + 32], header[len(MAGIC) + 32:]
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError as exc:
        raise EnvelopeError("archive header is damaged") from exc
    aead = AESGCM(_content_key(shared, salt, eph_pub))
    i, done = 0, False
    while True:
        head = src.read(8)
        if not head:
            break
        if done or len(head) != 8:
            raise EnvelopeError("archive has data after its last chunk or a cut chunk")
        (length,) = struct.unpack(">I", head[:4])
        if length > CHUNK + 16:
            raise EnvelopeError("archive chunk is too large: altered")
        ct = src.read(length)
        for last in (False, True):
            try:
                dst.write(aead.decrypt(_nonce(head[4:], i, last), ct, header))
            except InvalidTag:
                continue
            done = last
            break
        else:
            raise EnvelopeError(f"archive chunk {i} fails authentication: altered, or not "
                                "encrypted for this key")
        i += 1
    if not done:
        raise EnvelopeError("archive is truncated (its last chunk is missing)")
