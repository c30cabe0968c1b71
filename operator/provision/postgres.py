"""PostgreSQL role + database per site on the shared server.

The role owns its database; ``CONNECT`` is revoked from ``PUBLIC`` so no other site's
role can even open a connection to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from .names import pg_identifier


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


class Postgres:
    def __init__(self, admin_dsn: str, connect_timeout: float = 5.0) -> None:
        self._dsn = admin_dsn
        self._timeout = connect_timeout

    async def _connect(self) -> psycopg.AsyncConnection:
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=int(self._timeout))
        except psycopg.Error as exc:
            # psycopg's message may echo the conninfo; keep only the class name.
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL ({type(exc).__name__})") \
                from None

    async def ensure(self, site: str, password: str, set_password: bool) -> bool:
        """Create role and database if missing. The password is (re)set when the role is
        new or ``set_password`` says the Secret holding it is new. Returns whether
        anything was created or changed."""
        ident = pg_identifier(site)
        changed = False
        try:
            async with await self._connect() as conn:
                row = await (await conn.execute(
                    "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (ident,))).fetchone()
                if row is None:
                    await conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ident), sql.Literal(password)))
                    changed = True
                elif set_password or not row[0]:
                    await conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ident), sql.Literal(password)))
                    changed = True
                exists = await (await conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (ident,))).fetchone()
                if exists is None:
                    await conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(ident), sql.Identifier(ident)))
                    changed = True
                public_connect = await (await conn.execute(
                    "SELECT has_database_privilege('public', %s, 'CONNECT')", (ident,)
                )).fetchone()
                if public_connect and public_connect[0]:
                    await conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} "
                                               "FROM PUBLIC").format(sql.Identifier(ident)))
                    await conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(ident), sql.Identifier(ident)))
                    changed = True
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL refused provisioning "
                                      f"({type(exc).__name__})") from None
        return changed

    async def reclaim(self, site: str, policy: Literal["Retain", "Delete"]) -> None:
        """Delete: drop database and role. Retain: keep both, but lock the role out, so
        the data stays while nobody can use the retired credentials."""
        ident = pg_identifier(site)
        try:
            async with await self._connect() as conn:
                role = await (await conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (ident,))).fetchone()
                if policy == "Delete":
                    await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(ident)))
                    if role:
                        await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                            sql.Identifier(ident)))
                elif role:
                    await conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(
                        sql.Identifier(ident)))
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE usename = %s", (ident,))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL refused reclaiming "
                                      f"({type(exc).__name__})") from None
