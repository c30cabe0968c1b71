"""The exit archive's pure parts: envelope, manifest checks, safe unpacking."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kameng.exit import archive, envelope, manifest
from kameng.exit.manifest import ArchiveInvalid, FileEntry


def _seal(data: bytes, key: envelope.X25519PrivateKey) -> bytes:
    out = io.BytesIO()
    envelope.encrypt(io.BytesIO(data), out, envelope.load_public(envelope.public_b64(key)))
    return out.getvalue()


def _open(blob: bytes, key: envelope.X25519PrivateKey) -> bytes:
    out = io.BytesIO()
    envelope.decrypt(io.BytesIO(blob), out, key)
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, envelope.CHUNK, envelope.CHUNK + 1, 3 * envelope.CHUNK + 7])
def test_envelope_round_trip(size: int) -> None:
    key = envelope.generate()
    data = bytes(i % 251 for i in range(size))
    blob = _seal(data, key)
    assert size < 64 or data[:64] not in blob
    assert _open(blob, key) == data


def test_envelope_refuses_other_key_flipped_byte_truncation_and_reordering() -> None:
    key = envelope.generate()
    data = b"x" * (2 * envelope.CHUNK + 10)
    blob = _seal(data, key)
    with pytest.raises(envelope.EnvelopeError):
        _open(blob, envelope.generate())
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    with pytest.raises(envelope.EnvelopeError):
        _open(bytes(flipped), key)
    # Cut off the last chunk: every remaining chunk is authentic, yet it is refused.
    first = 8 + 32 + 16
    chunk_len = 8 + envelope.CHUNK + 16
    with pytest.raises(envelope.EnvelopeError, match="truncated"):
        _open(blob[:first + 2 * chunk_len], key)
    swapped = blob[:first] + blob[first + chunk_len:first + 2 * chunk_len] + \
        blob[first:first + chunk_len] + blob[first + 2 * chunk_len:]
    with pytest.raises(envelope.EnvelopeError):
        _open(swapped, key)
    with pytest.raises(envelope.EnvelopeError, match="header"):
        _open(b"PK\x03\x04" + blob[4:], key)


def _manifest(files: list[FileEntry]) -> dict:
    return manifest.build(site="s", uid="u", license_name="l", reason="termination",
                          started="t0", finished="t1", files=files, tools={}, notes=[])


def test_manifest_checks_every_file() -> None:
    files = [FileEntry(manifest.DUMP, "a" * 64, 10), FileEntry("tables/orders.csv", "b" * 64, 5, 2)]
    m = manifest.parse(manifest.encode(_manifest(files)))
    good = {manifest.DUMP: ("a" * 64, 10), "tables/orders.csv": ("b" * 64, 5),
            manifest.MANIFEST: ("x", 1), manifest.SIGNATURE: ("y", 1)}
    manifest.check_files(m, good)
    with pytest.raises(ArchiveInvalid, match=r"orders\.csv"):
        manifest.check_files(m, {**good, "tables/orders.csv": ("c" * 64, 5)})
    with pytest.raises(ArchiveInvalid, match="missing"):
        manifest.check_files(m, {k: v for k, v in good.items() if k != manifest.DUMP})
    with pytest.raises(ArchiveInvalid, match="does not list"):
        manifest.check_files(m, {**good, "extra.sql": ("d" * 64, 1)})
    with pytest.raises(ArchiveInvalid, match="format"):
        manifest.parse(b'{"format": "other"}')


def test_manifest_signature() -> None:
    key = Ed25519PrivateKey.generate()
    from kameng.contracts.license_token import public_key_to_b64
    data = manifest.encode(_manifest([]))
    sig = manifest.sign(data, key)
    manifest.verify_signature(data, sig, public_key_to_b64(key))
    with pytest.raises(ArchiveInvalid, match="signature"):
        manifest.verify_signature(data.replace(b'"s"', b'"t"'), sig, public_key_to_b64(key))
    with pytest.raises(ArchiveInvalid, match="signature"):
        manifest.verify_signature(data, sig, public_key_to_b64(Ed25519PrivateKey.generate()))


def test_unpack_refuses_links_and_escapes(tmp_path: Path) -> None:
    for member in (tarfile.TarInfo("../evil"), tarfile.TarInfo("link")):
        if member.name == "link":
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        bad = tmp_path / f"bad-{member.name.strip('./')}.tar.gz"
        with tarfile.open(bad, "w:gz") as tar:
            tar.addfile(member, io.BytesIO(b""))
        dest = tmp_path / f"out-{member.name.strip('./')}"
        dest.mkdir()
        with pytest.raises(ArchiveInvalid):
            archive.unpack(bad, dest)
    src = tmp_path / "src"
    (src / "tables").mkdir(parents=True)
    (src / "tables" / "a.csv").write_text("id\n1\n")
    archive.pack(src, tmp_path / "ok.tar.gz")
    (tmp_path / "ok").mkdir()
    got = archive.unpack(tmp_path / "ok.tar.gz", tmp_path / "ok")
    assert got == {"tables/a.csv": manifest.sha256_file(src / "tables" / "a.csv")}
