"""What an exit archive holds: pure builders and the checks a restore runs first.

The manifest lists every file with its SHA-256 and size, the site, its License, the
times and the versions of the tools that made it; it is signed with HQ's Ed25519 key
(the license-signing key), so a restore refuses an archive that someone with only HQ's
public *encryption* key forged, as well as one whose files were altered.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "kameng.io/exit-archive/v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
DUMP = "database.dump"
KEYS = "keys.json"
STATEMENTS = "statements.json"

# The tables handed over as CSV and JSON besides the dump: (file stem, query). Delivered
# keys stay encrypted exactly as stored; keys.json (inside the encrypted archive) holds
# the data key that decrypts them.
TABLES: tuple[tuple[str, str], ...] = (
    ("customers", "SELECT id, email, created_at FROM customers ORDER BY id"),
    ("orders", "SELECT * FROM orders ORDER BY created_at, id"),
    ("delivered_keys", "SELECT id AS order_id, product_id, key_enc, delivered_at FROM orders "
                       "WHERE key_enc IS NOT NULL ORDER BY delivered_at, id"),
    ("staff", "SELECT email, name FROM staff ORDER BY email"),
    ("coupons", "SELECT * FROM coupons ORDER BY code"),
)


class ArchiveInvalid(ValueError):
    """The archive fails a check; the message says which, never a secret."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    rows: int | None = None


def sha256_file(path: Any, bufsize: int = 1 << 20) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def build(*, site: str, uid: str, license_name: str, reason: str, started: str, finished: str,
          files: list[FileEntry], tools: Mapping[str, str], notes: list[str]) -> dict[str, Any]:
    return {
        "format": FORMAT, "site": site, "subSiteUid": uid, "license": license_name,
        "reason": reason, "startedAt": started, "finishedAt": finished,
        "tools": dict(sorted(tools.items())), "notes": notes,
        "files": [{k: v for k, v in (("path", f.path), ("sha256", f.sha256),
                                     ("size", f.size), ("rows", f.rows)) if v is not None}
                  for f in sorted(files, key=lambda f: f.path)],
    }


def encode(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=1).encode() + b"\n"


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return base64.b64encode(key.sign(data)) + b"\n"


def verify_signature(data: bytes, sig: bytes, public_b64: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64)).verify(
            base64.b64decode(sig.strip()), data)
    except (InvalidSignature, ValueError) as exc:
        raise ArchiveInvalid("the manifest's signature does not verify with HQ's public "
                             "key: the archive was not made by this platform or was "
                             "altered") from exc


def parse(data: bytes) -> dict[str, Any]:
    try:
        m = json.loads(data)
    except ValueError as exc:
        raise ArchiveInvalid("manifest.json is not JSON") from exc
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ArchiveInvalid(f"manifest format is not {FORMAT}")
    if not isinstance(m.get("files"), list) or not m.get("site"):
        raise ArchiveInvalid("manifest has no site or no file list")
    return m


def check_files(manifest: Mapping[str, Any], actual: Mapping[str, tuple[str, int]]) -> None:
    """``actual``: path → (sha256, size) of what the archive really holds. Every listed
    file must be there with its checksum and size, and nothing unlisted may be."""
    listed = {f["path"]: f for f in manifest["files"]}
    extra = sorted(set(actual) - set(listed) - {MANIFEST, SIGNATURE})
    if extra:
        raise ArchiveInvalid(f"archive holds files its manifest does not list: {extra[:5]}")
    for path, f in sorted(listed.items()):
        if path not in actual:
            raise ArchiveInvalid(f"{path} is listed in the manifest but missing")
        digest, size = actual[path]
        if digest != f["sha256"] or size != f["size"]:
            raise ArchiveInvalid(f"{path}: SHA-256 or size differs from the manifest "
                                 "(altered or damaged)")
    if DUMP not in listed:
        raise ArchiveInvalid(f"archive has no {DUMP}")
