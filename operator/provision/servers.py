"""The PostgreSQL servers the operator places sites on, and one admin client per server.

Configuration (``KAMENG_PG_SERVERS_FILE``, YAML or JSON; without it the one server of
``KAMENG_PG_ADMIN_DSN`` is the server ``default``)::

    servers:
      - name: pg-a                      # recorded on each SubSite placed there
        adminDsnEnv: KAMENG_PG_ADMIN_DSN  # the admin DSN, from this environment variable
        siteHost: pg-a.databases.svc    # host the storefront pods use (default: the DSN's)
        capacity: 400                   # sites it takes; 0 or absent = unlimited
        labels: {tier: standard}        # matched by spec.database.serverSelector
      - name: pg-b
        cnpg: {cluster: shops-b, namespace: databases}   # a CloudNativePG Cluster
        capacity: 400

A CloudNativePG ``Cluster`` is resolved by CNPG's conventions: the primary behind the
Service ``<cluster>-rw`` (port 5432), the superuser's credentials in the
``kubernetes.io/basic-auth`` Secret ``spec.superuserSecret.name`` or ``<cluster>-superuser``
(keys ``username``/``password``), which CNPG only creates with
``spec.enableSuperuserAccess: true``. The operator needs CREATEROLE and CREATEDB, which
the Cluster's application user (``<cluster>-app``) does not have.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml

from kameng.api.kinds import resource
from kameng.kube.client import Kube, path_for

from .ownership import Claim
from .placement import ServerInfo
from .postgres import DatabaseUnavailable, PgTarget, Postgres, target_of

DEFAULT_SERVER = "default"
CNPG_API_VERSION = resource("Cluster").api_version
CNPG_PORT = 5432


class ServerConfigError(Exception):
    """The server list is unusable. Never carries a DSN or password."""


@dataclass(frozen=True)
class CnpgRef:
    cluster: str
    namespace: str


@dataclass(frozen=True)
class ServerEntry:
    """One configured server, before CloudNativePG references are resolved."""

    info: ServerInfo
    admin_dsn: str | None = None
    site_host: str | None = None
    cnpg: CnpgRef | None = None

    def __repr__(self) -> str:  # the DSN carries the admin password
        return f"ServerEntry({self.info.name!r}, cnpg={self.cnpg})"


@dataclass(frozen=True)
class Server:
    """A resolved server: where the admin connects and where the sites' pods connect."""

    info: ServerInfo
    admin_dsn: str = field(repr=False)
    site_host: str
    site_port: int

    @property
    def name(self) -> str:
        return self.info.name


def parse(text: str, env: Mapping[str, str]) -> list[ServerEntry]:
    """The server list from the configuration file's text."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ServerConfigError(f"server list is not YAML/JSON: {exc.__class__.__name__}") \
            from None
    entries, seen = [], set()
    for i, raw in enumerate(doc.get("servers") or []):
        name = str(raw.get("name") or "")
        if not name or len(name) > 63 or name in seen:
            raise ServerConfigError(f"servers[{i}]: a unique name (1-63 characters) is "
                                    "required")
        seen.add(name)
        capacity = int(raw.get("capacity") or 0)
        if capacity < 0:
            raise ServerConfigError(f"server {name}: capacity must be 0 (unlimited) or more")
        info = ServerInfo(name, capacity, {str(k): str(v) for k, v in
                                           (raw.get("labels") or {}).items()})
        cnpg = raw.get("cnpg")
        if cnpg:
            if not cnpg.get("cluster") or not cnpg.get("namespace"):
                raise ServerConfigError(f"server {name}: cnpg needs cluster and namespace")
            entries.append(ServerEntry(info, site_host=raw.get("siteHost"),
                                       cnpg=CnpgRef(cnpg["cluster"], cnpg["namespace"])))
            continue
        dsn = raw.get("adminDsn")
        if raw.get("adminDsnEnv"):
            dsn = env.get(raw["adminDsnEnv"])
            if not dsn:
                raise ServerConfigError(f"server {name}: environment variable "
                                        f"{raw['adminDsnEnv']} is empty")
        if not dsn:
            raise ServerConfigError(f"server {name}: adminDsnEnv, adminDsn or cnpg is "
                                    "required")
        entries.append(ServerEntry(info, admin_dsn=dsn, site_host=raw.get("siteHost")))
    if not entries:
        raise ServerConfigError("the server list names no server")
    return entries


def entries_from_config(servers_file: str | None, admin_dsn: str, site_host: str | None,
                        env: Mapping[str, str] | None = None) -> list[ServerEntry]:
    if not servers_file:
        return [ServerEntry(ServerInfo(DEFAULT_SERVER), admin_dsn=admin_dsn,
                            site_host=site_host)]
    return parse(Path(servers_file).read_text(), os.environ if env is None else env)


def _b64(data: Mapping[str, str], key: str) -> str:
    try:
        return base64.b64decode(data[key]).decode()
    except (KeyError, ValueError):
        raise ServerConfigError(f"key {key!r} missing or unreadable") from None


def resolve_cnpg(entry: ServerEntry, cluster: dict[str, Any] | None,
                 secret: dict[str, Any] | None) -> Server:
    """A server entry that references a CloudNativePG Cluster, resolved from the Cluster
    object and its superuser Secret (CNPG's conventions, see the module doc)."""
    ref = entry.cnpg
    assert ref is not None
    where = f"server {entry.info.name}: CloudNativePG Cluster {ref.namespace}/{ref.cluster}"
    if cluster is None:
        raise ServerConfigError(f"{where} does not exist")
    spec = cluster.get("spec") or {}
    secret_name = (spec.get("superuserSecret") or {}).get("name") or f"{ref.cluster}-superuser"
    if secret is None:
        hint = "" if spec.get("enableSuperuserAccess") or spec.get("superuserSecret") else (
            "; CloudNativePG creates it only with spec.enableSuperuserAccess: true")
        raise ServerConfigError(f"{where}: its superuser Secret {secret_name} does not "
                                f"exist{hint}")
    data = secret.get("data") or {}
    try:
        user, password = _b64(data, "username"), _b64(data, "password")
    except ServerConfigError as exc:
        raise ServerConfigError(f"{where}: Secret {secret_name}: {exc}") from None
    host = f"{ref.cluster}-rw.{ref.namespace}.svc"
    dsn = (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:"
           f"{CNPG_PORT}/postgres?sslmode=prefer")
    return Server(entry.info, dsn, entry.site_host or host, CNPG_PORT)


def cnpg_secret_name(cluster: dict[str, Any] | None, ref: CnpgRef) -> str:
    spec = (cluster or {}).get("spec") or {}
    return (spec.get("superuserSecret") or {}).get("name") or f"{ref.cluster}-superuser"


async def resolve(kube: Kube, entries: list[ServerEntry]) -> list[Server]:
    """Every entry resolved (CloudNativePG Clusters read through the API)."""
    out = []
    for e in entries:
        if e.cnpg is None:
            assert e.admin_dsn is not None
            t: PgTarget = target_of(e.admin_dsn)
            out.append(Server(e.info, e.admin_dsn, e.site_host or t.host, t.port))
            continue
        cluster = await kube.get(path_for(CNPG_API_VERSION, "Cluster", e.cnpg.cluster,
                                          e.cnpg.namespace), kind="Cluster")
        secret = None
        if cluster is not None:
            secret = await kube.get(path_for("v1", "Secret", cnpg_secret_name(cluster, e.cnpg),
                                             e.cnpg.namespace), kind="Secret")
        out.append(resolve_cnpg(e, cluster, secret))
    return out


class Databases:
    """One :class:`Postgres` admin client per server, and the sites' placements this
    process knows (learned from each SubSite's record, or decided here)."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = {s.name: s for s in servers}
        self.order = [s.info for s in servers]
        self._pg = {s.name: Postgres(s.admin_dsn) for s in servers}
        self.placed: dict[str, str] = {}

    def server(self, name: str) -> Server | None:
        return self.servers.get(name)

    def admin(self, name: str) -> Postgres:
        return self._pg[name]

    async def ensure(self, site: str, claim: Claim, password: str, set_password: bool,
                     connection_limit: int, server: str) -> bool:
        self.placed[site] = server
        return await self._pg[server].ensure(site, claim, password, set_password,
                                             connection_limit)

    async def reclaim(self, site: str, claim: Claim,
                      policy: Literal["Retain", "Delete"]) -> list[str]:
        """Reclaim on the site's server; when this process never learned it (deleted
        before its first reconcile here), on every server: only what carries the
        SubSite's mark is touched, so the others are left alone."""
        where = [self.placed[site]] if site in self.placed else list(self._pg)
        left: list[str] = []
        for name in where:
            left += await self._pg[name].reclaim(site, claim, policy)
        return left

    async def close(self) -> None:
        for pg in self._pg.values():
            await pg.close()


def describe(servers: list[Server]) -> str:
    """For the startup log: names, capacities and labels, never a DSN."""
    return json.dumps([{"name": s.name, "capacity": s.info.capacity,
                        "labels": dict(s.info.labels), "siteHost": s.site_host}
                       for s in servers])


__all__ = [
    "DEFAULT_SERVER",
    "DatabaseUnavailable",
    "Databases",
    "Server",
    "ServerConfigError",
    "ServerEntry",
    "entries_from_config",
    "parse",
    "resolve",
    "resolve_cnpg",
]
