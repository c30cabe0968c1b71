"""Placing a site on one of the operator's PostgreSQL servers, recording it, and moving
it when (and only when) asked — the I/O around :mod:`kameng.provision.placement`.

Order matters for "never moves by accident": the placement is recorded in the SubSite's
annotation *before* anything is provisioned, so every site that has a database also
has its record (sites from before placement existed are recognised by the host of the
DSN in their Secret and recorded where they are).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from kameng.api.common import API_VERSION
from kameng.api.kinds import DATABASE_SERVER_ANNOTATION, MOVE_DATABASE_ANNOTATION
from kameng.api.resources import SUBSITE
from kameng.kube.client import path_for
from kameng.provision import placement as rules
from kameng.provision.names import pg_identifier
from kameng.provision.ownership import Claim
from kameng.provision.postgres import DatabaseUnavailable
from kameng.provision.servers import Server

from .runtime import Runtime

log = logging.getLogger(__name__)


def legacy_server(rt: Runtime, location: tuple[str, int] | None) -> str | None:
    """The configured server an existing site's DSN points at (first server if none
    matches: before placement existed, every site was on the one server)."""
    if location is None:
        return None
    for s in rt.postgres.servers.values():
        if (s.site_host, s.site_port) == location:
            return s.name
    return rt.postgres.order[0].name


def decide(rt: Runtime, body: dict[str, Any], selector: Mapping[str, str] | None,
           location: tuple[str, int] | None,
           placements: Mapping[str, str]) -> rules.Decision:
    md = body["metadata"]
    annotations = md.get("annotations") or {}
    # Every site's placement: as recorded on the SubSites (kopf's index, complete before
    # any reconcile runs) and as decided here since (not in the index yet).
    known = {**placements, **rt.postgres.placed}
    known.pop(md["name"], None)
    return rules.decide(annotations, (body.get("status") or {}).get("databaseServer"),
                        rt.postgres.order, rules.counts_of(known), selector,
                        legacy_server(rt, location),
                        annotations.get(MOVE_DATABASE_ANNOTATION) or None)


def needs_annotation(rt: Runtime) -> bool:
    """With one server a site cannot be placed elsewhere: status.databaseServer records
    it, and no SubSite write is spent on an annotation (a server added later finds such
    sites by their DSN, :func:`legacy_server`)."""
    return len(rt.postgres.servers) > 1


async def record(rt: Runtime, name: str, server: str, move_done: bool = False) -> None:
    """Write the placement annotation (and drop a fulfilled move request) in one patch."""
    patch: dict[str, Any] = {DATABASE_SERVER_ANNOTATION: server}
    if move_done:
        patch[MOVE_DATABASE_ANNOTATION] = None
    await rt.kube.merge_patch(path_for(API_VERSION, SUBSITE.kind, name),
                              {"metadata": {"annotations": patch}}, kind=SUBSITE.kind)
    rt.postgres.placed[name] = server


@dataclass(frozen=True)
class MoveError(Exception):
    message: str

    def __str__(self) -> str:
        return self.message


def _pg_env(server: Server, dbname: str) -> dict[str, str]:
    """libpq environment for pg_dump/pg_restore: the password never on a command line."""
    info = conninfo_to_dict(server.admin_dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"),
                     ("password", "PGPASSWORD"), ("sslmode", "PGSSLMODE")):
        if info.get(key):
            env[var] = str(info[key])
    env["PGDATABASE"] = dbname
    return env


async def copy_database(source: Server, target: Server, site: str) -> None:
    """pg_dump of the site's database on ``source`` restored into the (empty or partly
    restored) database of the same name on ``target``, objects owned by the site's role.
    Raises :class:`MoveError` with pg_restore's last lines (they name no password)."""
    dump, restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if not dump or not restore:
        raise MoveError("pg_dump/pg_restore are not installed where the operator runs")
    ident = pg_identifier(site)
    producer = await asyncio.create_subprocess_exec(
        dump, "--format=custom", "--no-owner", "--no-privileges",
        env=_pg_env(source, ident), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    # --clean --if-exists: a move interrupted half-way is simply run again.
    consumer = await asyncio.create_subprocess_exec(
        restore, "--clean", "--if-exists", "--no-owner", "--no-privileges",
        f"--role={ident}", "--single-transaction", "--exit-on-error", f"--dbname={ident}",
        env=_pg_env(target, ident), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert producer.stdout is not None
    assert consumer.stdin is not None

    async def pump() -> None:
        assert producer.stdout is not None
        assert consumer.stdin is not None
        while chunk := await producer.stdout.read(1 << 16):
            consumer.stdin.write(chunk)
            await consumer.stdin.drain()
        consumer.stdin.close()

    assert producer.stderr is not None
    assert consumer.stderr is not None
    # stdout is pumped above; only stderr is drained here (communicate() would read
    # stdout a second time).
    _, dump_err, restore_err = await asyncio.gather(
        pump(), producer.stderr.read(), consumer.stderr.read())
    await asyncio.gather(producer.wait(), consumer.wait())
    if producer.returncode or consumer.returncode:
        detail = (restore_err or dump_err or b"").decode(errors="replace").strip()
        raise MoveError(f"copying the database from {source.name} to {target.name} failed: "
                        f"{detail.splitlines()[-1][:300] if detail else 'no message'}")


async def move(rt: Runtime, site: str, claim: Claim, password: str, connection_limit: int,
               source: str, target: str) -> None:
    """Copy the site's database to ``target`` and lock its role on ``source`` out (the old
    data stays there until a person drops it: a move never deletes). The caller has
    stopped the storefront first, so nothing writes during the copy."""
    src, dst = rt.postgres.servers[source], rt.postgres.servers[target]
    try:
        await rt.postgres.admin(target).ensure(site, claim, password, set_password=True,
                                               connection_limit=connection_limit)
    except DatabaseUnavailable as exc:
        raise MoveError(f"preparing {target}: {exc}") from None
    await copy_database(src, dst, site)
    try:
        await rt.postgres.admin(source).reclaim(site, claim, "Retain")
    except DatabaseUnavailable as exc:
        raise MoveError(f"locking the old role on {source}: {exc}") from None
    log.info("SubSite %s: database moved from %s to %s (the copy on %s is kept, its role "
             "locked)", site, source, target, source)
