"""Restore an exit archive into a fresh site: checks first, then loads, then proves.

1. decrypt (AES-GCM: any altered byte fails), unpack regular files only;
2. the manifest's signature with HQ's public key, every file's SHA-256 and size;
3. the target database must hold no orders, customers or staff (a fresh site: restore
   never merges into or overwrites a live shop);
4. ``pg_restore`` of the dump in one transaction, objects owned by the site's role;
5. the per-table CSVs are computed again from the restored database and must have the
   manifest's SHA-256: the same rows, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kameng.provision.names import pg_identifier

from . import archive, envelope, manifest
from .export import ExportFailed, _run, _tool, site_conninfo
from .manifest import ArchiveInvalid


@dataclass(frozen=True)
class Opened:
    manifest: dict[str, Any]
    root: Path  # the unpacked files

    @property
    def data_keys(self) -> str:
        return str(json.loads((self.root / manifest.KEYS).read_text())["dataKeys"])


def open_archive(sealed: Path, private_b64: str, signing_public_b64: str, work: Path) -> Opened:
    """Decrypt and verify; raises :class:`ArchiveInvalid` / :class:`EnvelopeError`."""
    plain = work / "archive.tar.gz"
    with sealed.open("rb") as src, plain.open("wb") as dst:
        envelope.decrypt(src, dst, envelope.load_private(private_b64))
    root = work / "files"
    root.mkdir()
    actual = archive.unpack(plain, root)
    plain.unlink()
    for needed in (manifest.MANIFEST, manifest.SIGNATURE):
        if needed not in actual:
            raise ArchiveInvalid(f"archive has no {needed}")
    data = (root / manifest.MANIFEST).read_bytes()
    manifest.verify_signature(data, (root / manifest.SIGNATURE).read_bytes(), signing_public_b64)
    m = manifest.parse(data)
    manifest.check_files(m, actual)
    return Opened(m, root)


async def _fresh(conn: psycopg.AsyncConnection, ident: str) -> None:
    present = {r[0] for r in await (await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).fetchall()}
    for table in ("orders", "customers", "staff"):
        if table in present:
            row = await (await conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
            )).fetchone()
            if row and row[0]:
                raise ExportFailed(f"database {ident} already holds {table}: restore loads "
                                   "only into a fresh site, never over a live shop")


async def _csv_sha(conn: psycopg.AsyncConnection, query: str) -> str:
    h = hashlib.sha256()
    async with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)"
                                          ).format(sql.SQL(query))) as cp:
        async for chunk in cp:
            h.update(chunk)
    return h.hexdigest()


async def load(opened: Opened, site: str, admin_dsn: str) -> dict[str, int]:
    """Load into ``site``'s (existing, fresh) database; return rows per table, verified."""
    ident = pg_identifier(site)
    conninfo, env = site_conninfo(admin_dsn, site)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, password=env.get("PGPASSWORD"),
                                                     connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ExportFailed(f"database {ident} is unreachable or does not exist (create the "
                           f"SubSite {site} first) ({type(exc).__name__})") from None
    async with conn:
        await conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        await _fresh(conn, ident)
        # --clean drops what the fresh site's shop may have migrated (empty tables), so
        # the archive's schema and its migration ledger arrive whole; newer migrations
        # are applied by the shop when it starts.
        await _run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-acl",
                    f"--role={ident}", "--single-transaction", "--exit-on-error",
                    f"--dbname={conninfo}", str(opened.root / manifest.DUMP)], env)
        listed = {f["path"]: f for f in opened.manifest["files"]}
        rows: dict[str, int] = {}
        for stem, query in manifest.TABLES:
            entry = listed.get(f"tables/{stem}.csv")
            if entry is None or entry["size"] == 0:
                continue  # the table did not exist at the source
            if await _csv_sha(conn, query) != entry["sha256"]:
                raise ArchiveInvalid(f"restored table {stem} differs from the archive's "
                                     f"tables/{stem}.csv")
            rows[stem] = int(entry.get("rows", 0))
    return rows


async def fetch_and_open(location: str, store: Any, private_b64: str, signing_public_b64: str,
                         work: Path) -> Opened:
    sealed = work / "fetched.kmexit"
    await store.get(location, sealed)
    return open_archive(sealed, private_b64, signing_public_b64, work)


def workdir(base: str | None = None) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="kameng-restore-", dir=base)
