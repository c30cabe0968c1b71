"""Provisioning reuses its admin connections on the real PostgreSQL: a new connection
costs a SCRAM handshake, which py-spy showed as ~12% of the operator's CPU while a
batch of sites converged (every reconcile's ensure opened one)."""

from __future__ import annotations

from kameng.provision.ownership import Claim
from kameng.provision.postgres import Postgres

SITE = "it-pg-reuse"


async def test_ensures_reuse_admin_connections(pg_admin_dsn: str) -> None:
    pg = Postgres(pg_admin_dsn)
    claim = Claim(uid="0f6c9a3e-reuse")
    try:
        backends = set()
        for i in range(6):
            await pg.ensure(SITE, claim, "pw-reuse-1", set_password=i == 0,
                            connection_limit=5)
            # The server process behind the connection the next ensure will use (the
            # database's own session counter would also count other tests' clients).
            backends |= {c.info.backend_pid for c in getattr(pg, "_idle", [])}
        assert len(backends) == 1
    finally:
        await pg.reclaim(SITE, claim, "Delete")
        await pg.close()
