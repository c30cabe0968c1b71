"""The export as the operator and the CLI run it: store from its Secret, the site's
database checked to be this SubSite's, HQ's keys, then :func:`export.export_site`."""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kameng.kube.client import Kube, KubeError, path_for
from kameng.provision.names import marked_uid, pg_identifier

from . import keys
from .export import ExportFailed, ExportRequest, ExportResult, export_site
from .store import Store, StoreUnavailable, decode_secret, from_settings


async def load_store(kube: Kube, namespace: str, secret: str, default_dir: str) -> Store:
    """The store the Secret describes; without the Secret, the directory ``default_dir``."""
    try:
        obj = await kube.get(path_for("v1", "Secret", secret, namespace), kind="Secret")
    except KubeError as exc:
        raise StoreUnavailable(f"cannot read Secret {namespace}/{secret}: {exc}") from None
    settings = decode_secret((obj or {}).get("data"))
    return from_settings(settings, default_dir)


async def database_owner(admin_dsn: str, site: str
                         ) -> tuple[Literal["absent", "marked", "unmarked"], str | None]:
    """Whether the site's database exists and whose mark it carries."""
    ident = pg_identifier(site)
    try:
        async with await psycopg.AsyncConnection.connect(admin_dsn, connect_timeout=5,
                                                         autocommit=True) as conn:
            row = await (await conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname = %s", (ident,))).fetchone()
    except psycopg.OperationalError as exc:
        raise ExportFailed(f"PostgreSQL is unreachable ({type(exc).__name__})") from None
    if row is None:
        return "absent", None
    uid = marked_uid(row[0])
    return ("marked" if uid else "unmarked"), uid


async def run_export(kube: Kube, *, namespace: str, body: dict[str, Any], admin_dsn: str,
                     hq_dsn: str | None, store: Store, data_keys: str,
                     signing_key: Ed25519PrivateKey, reason: str,
                     workdir: str | None = None) -> ExportResult:
    md = body["metadata"]
    req = ExportRequest(
        site=md["name"], uid=md.get("uid", ""),
        license_name=str((body.get("spec") or {}).get("licenseRef", "")), reason=reason,
        data_keys=data_keys, hq_public_key=await keys.public_key(kube, namespace),
        signing_key=signing_key)
    return await export_site(req, admin_dsn, hq_dsn, store, workdir)
