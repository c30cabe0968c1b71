"""Export a site: one consistent snapshot of its database as a ``pg_dump`` (custom
format) and per-table CSV and JSON lines, its settlement statements from HQ's ledger
(read-only), its data key, and a signed manifest — packed, encrypted for HQ and put
in the store.

Consistent: the CSVs are read in a REPEATABLE READ transaction whose snapshot
``pg_dump --snapshot`` reuses, so the dump and the tables show the same moment even
while the shop still takes orders. Passwords reach ``pg_dump`` through its environment,
never its command line (which ``ps`` shows).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kameng.provision.names import pg_identifier

from . import archive, envelope, manifest
from .manifest import FileEntry
from .store import Store


class ExportFailed(Exception):
    """The export could not be made; the message says why and names no secret."""


@dataclass(frozen=True)
class ExportRequest:
    site: str
    uid: str
    license_name: str
    reason: str  # "termination" or "on-demand"
    data_keys: str = field(repr=False)  # the site's key ring, travels inside the archive
    hq_public_key: str  # X25519, base64
    signing_key: Ed25519PrivateKey = field(repr=False)


@dataclass(frozen=True)
class ExportResult:
    location: str
    sha256: str
    size: int
    rows: dict[str, int]
    seconds: float
    manifest: dict[str, Any]


def archive_name(site: str, uid: str, at: datetime) -> str:
    return f"{site}/{site}-{uid[:8]}-{at.strftime('%Y%m%dT%H%M%SZ')}.kmexit"


def _tool(binary: str) -> str:
    # The newest PostgreSQL client: pg_dump must not be older than the server.
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                    reverse=True):
        if (d / binary).is_file():
            return str(d / binary)
    found = shutil.which(binary)
    if not found:
        raise ExportFailed(f"{binary} is not installed (PostgreSQL client tools)")
    return found


def site_conninfo(admin_dsn: str, site: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment with PGPASSWORD) for the site's
    database, as the admin."""
    info = {k: str(v) for k, v in conninfo_to_dict(admin_dsn).items()}
    password = info.pop("password", "")
    info["dbname"] = pg_identifier(site)
    env = {**os.environ, "PGPASSWORD": password} if password else dict(os.environ)
    return make_conninfo(**info), env


async def _run(argv: list[str], env: Mapping[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        # pg_dump's messages name objects and servers, not passwords (those are in env).
        raise ExportFailed(f"{Path(argv[0]).name} failed: {err.decode(errors='replace')[-400:]}")
    return out.decode(errors="replace")


async def _tables(conn: psycopg.AsyncConnection, work: Path) -> tuple[list[FileEntry],
                                                                      dict[str, int], list[str]]:
    entries, rows, notes = [], {}, []
    present = {r[0] for r in await (await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).fetchall()}
    (work / "tables").mkdir()
    for stem, query in manifest.TABLES:
        base = "orders" if stem == "delivered_keys" else stem
        csv_path, json_path = work / "tables" / f"{stem}.csv", work / "tables" / f"{stem}.jsonl"
        if base not in present:
            notes.append(f"table {base} does not exist (the shop never migrated it)")
            csv_path.write_bytes(b"")
            json_path.write_bytes(b"")
            rows[stem] = 0
        else:
            with csv_path.open("wb") as f:
                async with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, "
                                                      "HEADER true)").format(sql.SQL(query))
                                              ) as cp:
                    async for chunk in cp:
                        f.write(chunk)
            # JSON lines by COPY too (no row-by-row fetch): CSV with quote and delimiter set to
            # control characters that JSON text always escapes, so each line is the JSON
            # text exactly, never quoted or escaped by COPY.
            n = 0
            with json_path.open("wb") as f:
                async with conn.cursor().copy(sql.SQL(
                        "COPY (SELECT row_to_json(t)::text FROM ({}) t) TO STDOUT WITH "
                        "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')").format(
                            sql.SQL(query))) as cp:
                    async for chunk in cp:
                        f.write(chunk)
                        n += bytes(chunk).count(b"\n")
            rows[stem] = n
        for p in (csv_path, json_path):
            digest, size = manifest.sha256_file(p)
            entries.append(FileEntry(str(p.relative_to(work)), digest, size, rows[stem]))
    return entries, rows, notes


async def _statements(hq_dsn: str | None, site: str, dest: Path) -> str | None:
    """HQ's ledger statements of the site (read-only); a note when there are none to read."""
    if not hq_dsn:
        await asyncio.to_thread(dest.write_text, json.dumps({"site": site, "statements": []})
                                + "\n")
        return "no HQ ledger database configured (KAMENG_HQ_DATABASE_URL): no statements"
    try:
        async with await psycopg.AsyncConnection.connect(hq_dsn, connect_timeout=5) as conn:
            await conn.set_read_only(True)
            exists = await (await conn.execute(
                "SELECT to_regclass('ledger.statements') IS NOT NULL")).fetchone()
            statements: list[Any] = []
            if exists and exists[0]:
                cur = await conn.execute(
                    "SELECT json_build_object('periodStart', period_start, 'periodEnd', "
                    "period_end, 'currency', currency, 'figures', figures, 'closedAt', "
                    "closed_at) FROM ledger.statements WHERE site = %s ORDER BY period_start",
                    (site,))
                statements = [r[0] for r in await cur.fetchall()]
    except psycopg.OperationalError as exc:
        raise ExportFailed(f"HQ's ledger database is unreachable ({type(exc).__name__})"
                           ) from None
    await asyncio.to_thread(dest.write_text, json.dumps(
        {"site": site, "statements": statements}, indent=1, default=str) + "\n")
    return None if statements or (exists and exists[0]) else "HQ's ledger has no statements table"


async def build_plain(req: ExportRequest, admin_dsn: str, hq_dsn: str | None, work: Path
                      ) -> tuple[dict[str, Any], dict[str, int]]:
    """Write the archive's files into ``work`` and return (manifest, rows per table)."""
    started = datetime.now(UTC)
    conninfo, env = site_conninfo(admin_dsn, req.site)
    files = work / "files"
    files.mkdir()
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, password=env.get("PGPASSWORD"),
                                                     connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ExportFailed(f"site database {pg_identifier(req.site)} is unreachable "
                           f"({type(exc).__name__})") from None
    async with conn:
        # Timestamps as text in UTC/ISO: the restore recomputes these CSVs and compares.
        await conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        await conn.commit()
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            snap = await (await conn.execute("SELECT pg_export_snapshot()")).fetchone()
            assert snap is not None
            dump = asyncio.create_task(_run(
                [_tool("pg_dump"), "--format=custom", "--compress=6", "--no-owner",
                 "--no-acl", f"--snapshot={snap[0]}", f"--file={files / manifest.DUMP}",
                 f"--dbname={conninfo}"], env))
            try:
                entries, rows, notes = await _tables(conn, files)
            finally:
                await asyncio.wait([dump])  # the snapshot lives until pg_dump has it
            dump.result()
        version = await (await conn.execute("SHOW server_version")).fetchone()
    note = await _statements(hq_dsn, req.site, files / manifest.STATEMENTS)
    if note:
        notes.append(note)
    (files / manifest.KEYS).write_text(json.dumps({"dataKeys": req.data_keys}) + "\n")
    for name in (manifest.DUMP, manifest.STATEMENTS, manifest.KEYS):
        entries.append(FileEntry(name, *manifest.sha256_file(files / name)))
    tools = {"pg_dump": (await _run([_tool("pg_dump"), "--version"], env)).strip(),
             "postgresql-server": str(version[0] if version else "?"),
             "python": sys.version.split()[0], "kameng": _kameng_version()}
    m = manifest.build(site=req.site, uid=req.uid, license_name=req.license_name,
                       reason=req.reason, started=started.isoformat(),
                       finished=datetime.now(UTC).isoformat(), files=entries, tools=tools,
                       notes=notes)
    data = manifest.encode(m)
    (files / manifest.MANIFEST).write_bytes(data)
    (files / manifest.SIGNATURE).write_bytes(manifest.sign(data, req.signing_key))
    return m, rows


def _kameng_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kameng")
    except PackageNotFoundError:
        return "unknown"


async def export_site(req: ExportRequest, admin_dsn: str, hq_dsn: str | None, store: Store,
                      workdir: str | None = None) -> ExportResult:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"kameng-exit-{req.site}-", dir=workdir) as tmp:
        work = Path(tmp)
        try:
            m, rows = await build_plain(req, admin_dsn, hq_dsn, work)
        except psycopg.Error as exc:
            # Never a silent crash: the reason reaches status (server messages name
            # objects, not passwords).
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise ExportFailed(f"reading the site's data failed: {type(exc).__name__}: "
                               f"{first}") from None
        plain, sealed = work / "archive.tar.gz", work / "archive.kmexit"

        def seal() -> tuple[str, int]:
            archive.pack(work / "files", plain)
            with plain.open("rb") as src, sealed.open("wb") as dst:
                envelope.encrypt(src, dst, envelope.load_public(req.hq_public_key))
            return manifest.sha256_file(sealed)

        digest, size = await asyncio.to_thread(seal)
        location = await store.put(sealed, archive_name(req.site, req.uid, datetime.now(UTC)),
                                   digest)
    return ExportResult(location, digest, size, rows, time.monotonic() - t0, m)
