"""The plain archive: a tar of a directory (before encryption) and its safe unpacking."""

from __future__ import annotations

import tarfile
from pathlib import Path

from .manifest import ArchiveInvalid, sha256_file


def pack(src: Path, dest: Path) -> None:
    # gzip level 1: the CSV/JSON halve, the dump is compressed already; level 6 would
    # cost ~4x the CPU for a few percent on this data.
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            tar.add(f, arcname=str(f.relative_to(src)), recursive=False)


def unpack(tar_path: Path, dest: Path) -> dict[str, tuple[str, int]]:
    """Extract regular files only (no links, devices or paths outside ``dest``) and
    return path → (sha256, size) of each."""
    out: dict[str, tuple[str, int]] = {}
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for m in tar:
                if not m.isfile():
                    raise ArchiveInvalid(f"archive member {m.name!r} is not a regular file")
                target = (dest / m.name).resolve()
                if not target.is_relative_to(dest.resolve()) or m.name in out:
                    raise ArchiveInvalid(f"archive member {m.name!r} escapes or repeats")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                with src, target.open("wb") as w:
                    while chunk := src.read(1 << 20):
                        w.write(chunk)
                out[m.name] = sha256_file(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveInvalid(f"archive content is not a readable tar.gz ({type(exc).__name__})"
                             ) from None
    return out
