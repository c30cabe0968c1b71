"""The dev env's S3 server (versitygw, started by hack/devenv) and the exit's stores:
exported credentials work, wrong ones are refused, a multipart upload with per-part
SHA-256 checksums round-trips, and `hack/devenv s3 stop|start` keeps the objects."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from kameng.exit.store import PART_SIZE, FileStore, S3Store, StoreUnavailable, from_settings
from tests.conftest import ROOT
from tests.support import exit as ex


def test_status_lists_the_s3_server(devenv: dict[str, str]) -> None:
    out = subprocess.run([str(ROOT / "hack" / "devenv"), "status"], capture_output=True,
                         text=True, check=False, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("s3 "))
    assert "running" in line


def test_multipart_upload_round_trips_and_survives_a_restart(devenv: dict[str, str],
                                                             tmp_path: Path) -> None:
    settings = ex.s3_settings(f"store-{uuid.uuid4().hex[:8]}")
    store = from_settings(settings)
    assert isinstance(store, S3Store)
    assert settings["secretAccessKey"] not in repr(store)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 * PART_SIZE + 12345))  # three parts
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    location = asyncio.run(store.put(src, "site/big.kmexit", digest))
    assert location == f"s3://{settings['bucket']}/{settings['prefix']}/site/big.kmexit"
    head = ex.s3_client().head_object(Bucket=settings["bucket"],
                                      Key=f"{settings['prefix']}/site/big.kmexit")
    assert head["ContentLength"] == src.stat().st_size
    assert head["Metadata"]["sha256"] == digest
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of 3 parts

    subprocess.run([str(ROOT / "hack" / "devenv"), "s3", "stop"], check=True, timeout=60)
    try:
        with pytest.raises(StoreUnavailable) as err:
            asyncio.run(store.put(src, "site/other.kmexit", digest))
        assert settings["secretAccessKey"] not in str(err.value)
    finally:
        subprocess.run([str(ROOT / "hack" / "devenv"), "s3", "start"], check=True, timeout=60)
    back = tmp_path / "back.bin"
    asyncio.run(store.get(location, back))
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert asyncio.run(store.exists(location, digest))
    assert not asyncio.run(store.exists(location, "0" * 64))


def test_wrong_credentials_are_refused(devenv: dict[str, str], tmp_path: Path) -> None:
    settings = {**ex.s3_settings("nope"), "secretAccessKey": "wrong-" + uuid.uuid4().hex}
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    with pytest.raises(StoreUnavailable, match=r"(?i)signature|denied|forbidden|403"):
        asyncio.run(from_settings(settings).put(src, "a.kmexit", "0" * 64))


def test_file_store_writes_whole_files_only(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "exports")
    src = tmp_path / "a.bin"
    src.write_bytes(b"archive")
    digest = hashlib.sha256(b"archive").hexdigest()
    location = asyncio.run(store.put(src, "s/a.kmexit", digest))
    assert location == f"file://{tmp_path / 'exports' / 's' / 'a.kmexit'}"
    assert not list((tmp_path / "exports" / "s").glob("*.part"))
    assert asyncio.run(store.exists(location, digest))
    with pytest.raises(StoreUnavailable, match="cannot write"):
        asyncio.run(FileStore(Path("/proc/kameng-nope")).put(src, "a", digest))
