"""PostgreSQL role + database per site on the shared server.

The role owns its database; ``CONNECT`` is revoked from ``PUBLIC`` so no other site's
role can even open a connection to it, nor can a site role open any other database.
Role and database carry the SubSite's uid as a COMMENT: the operator creates, changes
and drops only what carries it (:mod:`.ownership`). Each role has a CONNECTION LIMIT by
plan, so one site cannot starve the shared server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from kameng.api.conditions import R_NAME_CONFLICT

from .names import MARK_PREFIX, mark, marked_uid, pg_identifier
from .ownership import Claim, NotOurs, judge


class DatabaseUnavailable(Exception):
    """The server could not be reached or refused the admin. No DSN in the message."""


@dataclass(frozen=True)
class PgTarget:
    host: str
    port: int


def target_of(admin_dsn: str) -> PgTarget:
    info = conninfo_to_dict(admin_dsn)
    return PgTarget(host=str(info.get("host") or "127.0.0.1"), port=int(info.get("port") or 5432))


def site_dsn(site: str, password: str, host: str, port: int) -> str:
    ident = pg_identifier(site)
    return f"postgresql://{ident}:{quote(password, safe='')}@{host}:{port}/{ident}"


def _db_owner(ident: str, role: tuple[bool, int, str | None] | None,
              db: tuple[str, str | None] | None) -> str | None:
    """The uid a site database belongs to: its mark, or else, when it is owned by the
    site role and that role is marked, the role's uid. CREATE DATABASE cannot share a
    transaction with its COMMENT, so a crash in between leaves it unmarked; only the
    operator can have created it (site roles have NOCREATEDB), so it is still ours."""
    if db is None:
        return None
    own = marked_uid(db[1])
    if own is None and role is not None and db[0] == ident:
        return marked_uid(role[2])
    return own


# Admin connections kept open between ensures (one per concurrent provisioning is made
# on demand; only this many stay).
MAX_IDLE = 4


class Postgres:
    def __init__(self, admin_dsn: str, connect_timeout: float = 5.0) -> None:
        self._dsn = admin_dsn
        self._timeout = connect_timeout
        # Idle admin connections kept for the next ensure: a new connection costs a SCRAM
        # handshake (4096 PBKDF2 rounds on our side), which was ~12% of the operator's
        # CPU while a batch of sites converged (py-spy).
        self._idle: list[psycopg.AsyncConnection] = []

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """An admin connection, reused when the last use left it healthy and idle."""
        conn = None
        while self._idle and conn is None:
            candidate = self._idle.pop()
            try:  # one round trip: a server restart since the last use shows here
                await candidate.execute("SELECT 1")
                conn = candidate
            except psycopg.Error:
                await candidate.close()
        if conn is None:
            conn = await self._connect()
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            if healthy and not conn.broken and len(self._idle) < MAX_IDLE and \
                    conn.info.transaction_status == pq.TransactionStatus.IDLE:
                self._idle.append(conn)
            else:
                await conn.close()

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    async def _connect(self) -> psycopg.AsyncConnection:
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=int(self._timeout))
        except psycopg.Error as exc:
            # psycopg's message may echo the conninfo; keep only the class name.
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL ({type(exc).__name__})") \
                from None

    async def ensure(self, site: str, claim: Claim, password: str, set_password: bool,
                     connection_limit: int) -> bool:
        """Create role and database if missing, or keep them if they carry this SubSite's
        mark; refuse (:class:`NotOurs`) anything else. The password is (re)set when the
        role is new or adopted, or when ``set_password`` says the Secret holding it is
        new. Returns whether anything was created or changed."""
        ident = pg_identifier(site)
        changed = False
        try:
            async with self._session() as conn:
                role, db = await self._inspect(conn, ident)
                role_verdict = judge(f"PostgreSQL role {ident}", role is not None,
                                     marked_uid(role[2]) if role else None, claim)
                db_verdict = judge(f"PostgreSQL database {ident}", db is not None,
                                   _db_owner(ident, role, db), claim)
                # Role and its mark in one transaction: a crash in between must not leave
                # an unmarked role that the next run would refuse as foreign.
                async with conn.transaction():
                    if role_verdict == "create":
                        await conn.execute(sql.SQL(
                            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                            "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} PASSWORD {}").format(
                            sql.Identifier(ident), sql.Literal(connection_limit),
                            sql.Literal(password)))
                        changed = True
                    elif role_verdict == "adopt" or set_password or not role[0]:  # type: ignore[index]
                        await conn.execute(sql.SQL(
                            "ALTER ROLE {} LOGIN CONNECTION LIMIT {} PASSWORD {}").format(
                            sql.Identifier(ident), sql.Literal(connection_limit),
                            sql.Literal(password)))
                        changed = True
                    elif role[1] != connection_limit:  # type: ignore[index]
                        await conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                            sql.Identifier(ident), sql.Literal(connection_limit)))
                        changed = True
                    if role_verdict != "ours":
                        await conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
                            sql.Identifier(ident), sql.Literal(mark(claim.uid))))
                if db_verdict == "create":
                    await conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(ident), sql.Identifier(ident)))
                    changed = True
                if db_verdict != "ours":
                    await conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(ident), sql.Literal(mark(claim.uid))))
                changed |= await self._isolate(conn, ident)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL refused provisioning "
                                      f"({type(exc).__name__})") from None
        return changed

    async def _inspect(self, conn: psycopg.AsyncConnection, ident: str
                       ) -> tuple[tuple[bool, int, str | None] | None,
                                  tuple[str, str | None] | None]:
        """(role: can log in, connection limit, comment) and (database: owner, comment);
        raises :class:`NotOurs` for the admin's own role and any privileged role, which
        are never touched, whatever their comment says."""
        admin = (await (await conn.execute("SELECT current_user")).fetchone())[0]  # type: ignore[index]
        row = await (await conn.execute(
            "SELECT rolcanlogin, rolconnlimit, shobj_description(oid, 'pg_authid'), "
            "rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
            "FROM pg_roles WHERE rolname = %s", (ident,))).fetchone()
        if ident == admin or (row is not None and row[3]):
            raise NotOurs(R_NAME_CONFLICT,
                          f"PostgreSQL role {ident} is "
                          + ("the operator's own admin role" if ident == admin else
                             "a privileged role (superuser, CREATEROLE, CREATEDB, "
                             "REPLICATION or BYPASSRLS)")
                          + "; the operator never touches it. Rename the SubSite")
        db = await (await conn.execute(
            "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database') "
            "FROM pg_database WHERE datname = %s", (ident,))).fetchone()
        role = (bool(row[0]), int(row[1]), row[2]) if row else None
        return role, (db[0], db[1]) if db else None

    async def _isolate(self, conn: psycopg.AsyncConnection, ident: str) -> bool:
        """The site's role reaches its own database and no other.

        PostgreSQL grants CONNECT on every new database to PUBLIC, so a site role could
        open ``postgres`` or any database without a revoke. The operator revokes it from
        PUBLIC on every database it can reach that still grants it (and gives it back
        explicitly to every existing non-site role that could use it, so nothing else
        loses access), and keeps its own database for its own role.

        One transaction under one advisory lock for all sites: sites reconcile in
        parallel, and concurrent GRANT/REVOKE on one database fail with "tuple
        concurrently updated"."""
        changed = False
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (MARK_PREFIX + "isolate",))
            # A site database is marked, or (between its CREATE and its COMMENT) owned
            # by a marked site role: never opened to anyone else.
            rows = await (await conn.execute(
                "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') LIKE %s "
                "OR coalesce(shobj_description(datdba, 'pg_authid'), '') LIKE %s "
                "FROM pg_database WHERE datallowconn "
                "AND has_database_privilege('public', oid, 'CONNECT')",
                (MARK_PREFIX + "%", MARK_PREFIX + "%"))).fetchall()
            others: list[str] | None = None
            for dbname, site_db in rows:
                if dbname == ident:
                    await conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} "
                                               "FROM PUBLIC").format(sql.Identifier(ident)))
                    await conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(ident), sql.Identifier(ident)))
                    changed = True
                    continue
                if site_db:
                    continue  # another site's database: its own ensure locks it
                if others is None:
                    others = [r[0] for r in await (await conn.execute(
                        "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper "
                        "AND rolname <> %s "
                        "AND coalesce(shobj_description(oid, 'pg_authid'), '') NOT LIKE %s",
                        (ident, MARK_PREFIX + "%"))).fetchall()]
                await conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC")
                                   .format(sql.Identifier(dbname)))
                for role in others:
                    await conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}")
                                       .format(sql.Identifier(dbname), sql.Identifier(role)))
                changed = True
            # Explicit grants the site role may hold elsewhere (e.g. given back above
            # while it was an unmarked role of an earlier operator version).
            for (dbname,) in await (await conn.execute(
                    "SELECT d.datname FROM pg_database d, aclexplode(d.datacl) a "
                    "WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) "
                    "AND a.privilege_type = 'CONNECT' AND d.datname <> %s",
                    (ident, ident))).fetchall():
                await conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                    sql.Identifier(dbname), sql.Identifier(ident)))
                changed = True
        return changed

    async def reclaim(self, site: str, claim: Claim,
                      policy: Literal["Retain", "Delete"]) -> list[str]:
        """Delete: drop database and role. Retain: keep both, but lock the role out, so
        the data stays while nobody can use the retired credentials. Only what carries
        this SubSite's mark is touched; returns what was left alone and why."""
        ident = pg_identifier(site)
        left: list[str] = []
        try:
            async with self._session() as conn:
                try:
                    role, db = await self._inspect(conn, ident)
                except NotOurs as exc:
                    return [str(exc)]
                ours_role = ours_db = False
                for what, exists, comment in (("role", role is not None,
                                               role[2] if role else None),
                                              ("database", db is not None,
                                               db[1] if db else None)):
                    try:
                        verdict = judge(f"PostgreSQL {what} {ident}", exists,
                                        marked_uid(comment) if what == "role"
                                        else _db_owner(ident, role, db), claim)
                    except NotOurs as exc:
                        left.append(str(exc).split(";")[0] + "; left in place")
                        continue
                    if what == "role":
                        ours_role = verdict != "create"
                    else:
                        ours_db = verdict != "create"
                if policy == "Delete":
                    if ours_db:
                        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                                           .format(sql.Identifier(ident)))
                    if ours_role and not (db is not None and not ours_db):
                        await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                            sql.Identifier(ident)))
                elif ours_role:
                    await conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(
                        sql.Identifier(ident)))
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE usename = %s", (ident,))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL refused reclaiming "
                                      f"({type(exc).__name__})") from None
        return left
