"""Storefront settings: the site-config contract plus secrets, from env or files.

Every secret ``X`` is read from env ``X``, else from the file named by env ``X_FILE``,
else from the default mount ``/etc/kameng/secrets/<secret>/<key>`` (the operator mounts
each Secret there), so the operator's ConfigMap and Secrets drive the app unchanged.

================================  ===============================================  =======
env var (or ``<name>_FILE``)      default file                                    modes
================================  ===============================================  =======
KAMENG_SITE_CONFIG[_FILE]         /etc/kameng/config/site.json                     both
KAMENG_DATABASE_URL               /etc/kameng/secrets/storefront-db/dsn            both
KAMENG_REDIS_URL                  /etc/kameng/secrets/storefront-redis/url         both
KAMENG_SESSION_SECRET             /etc/kameng/secrets/storefront-keys/session-secret both
KAMENG_DATA_KEYS                  /etc/kameng/secrets/storefront-keys/data-key     both
KAMENG_LICENSE_TOKEN              /etc/kameng/secrets/license/token                subsite
KAMENG_HQ_API_TOKEN               /etc/kameng/secrets/storefront-keys/hq-api-token subsite
KAMENG_HQ_MASTER_SECRET           /etc/kameng/secrets/hq/master-secret             hq
KAMENG_HQ_PUBLIC_KEY              /etc/kameng/secrets/hq/public-key                hq
KAMENG_ADMIN_PASSWORD             /etc/kameng/secrets/storefront-keys/admin-password both
================================  ===============================================  =======

Plain settings: ``KAMENG_MODE`` (hq|subsite), ``KAMENG_PUBLIC_URL`` (this app's public
base URL, used in payment return/notify URLs), ``KAMENG_HQ_URL`` (overrides ``hqUrl``),
``KAMENG_CATALOG_SYNC_SECONDS`` (default 5),
``KAMENG_MIN_WITHDRAWAL`` (decimal, default ``100.00``), ``KAMENG_PII_PEPPER``,
``KAMENG_LICENSE_RECHECK_SECONDS`` (default 5), ``KAMENG_DB_POOL_SIZE`` (default 20).

HQ mode verifies license tokens with ``KAMENG_HQ_PUBLIC_KEY`` (PEM or base64, several
comma-separated for rotation; default: ``hqPublicKey`` of the site config). HQ's keys
Secret (``signing-key.pem``, ``public-key``, ``master-secret``) mounts at ``.../hq/``.

``KAMENG_DATA_KEYS`` is ``kid:base64(32 bytes)[,kid:base64...]``; the first key encrypts,
all decrypt (rotation). ``KAMENG_ADMIN_PASSWORD`` bootstraps the password of the HQ
``admin`` account / of sub-site members that have none yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kameng.contracts.money import to_fen
from kameng.contracts.siteconfig import SiteConfig, SiteConfigError, load_site_config

Mode = Literal["hq", "subsite"]
SECRETS_ROOT = "/etc/kameng/secrets"

_DEFAULT_FILES = {
    "KAMENG_DATABASE_URL": "storefront-db/dsn",
    "KAMENG_REDIS_URL": "storefront-redis/url",
    "KAMENG_SESSION_SECRET": "storefront-keys/session-secret",
    "KAMENG_DATA_KEYS": "storefront-keys/data-key",
    "KAMENG_LICENSE_TOKEN": "license/token",
    "KAMENG_HQ_API_TOKEN": "storefront-keys/hq-api-token",
    "KAMENG_HQ_MASTER_SECRET": "hq/master-secret",
    "KAMENG_HQ_PUBLIC_KEY": "hq/public-key",
    "KAMENG_ADMIN_PASSWORD": "storefront-keys/admin-password",
}


class ConfigError(RuntimeError):
    """Missing or invalid setting. Names the setting, never its value."""


def read_secret(name: str, env: Mapping[str, str], required: bool = True) -> str | None:
    """Value of secret ``name`` from env, ``<name>_FILE`` or its default mount."""
    value = env.get(name)
    if value:
        return value.strip()
    path = env.get(f"{name}_FILE") or (
        str(Path(env.get("KAMENG_SECRETS_ROOT", SECRETS_ROOT)) / _DEFAULT_FILES[name])
        if name in _DEFAULT_FILES
        else None
    )
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8").strip()
    if required:
        raise ConfigError(f"setting {name} is missing (env {name} or file {name}_FILE)")
    return None


def secret_path(name: str, env: Mapping[str, str]) -> str | None:
    """File a secret is read from, if it is file-based (so it can be re-read on change)."""
    if env.get(name):
        return None
    path = env.get(f"{name}_FILE")
    if not path and name in _DEFAULT_FILES:
        path = str(Path(env.get("KAMENG_SECRETS_ROOT", SECRETS_ROOT)) / _DEFAULT_FILES[name])
    return path


@dataclass(frozen=True)
class Settings:
    mode: Mode
    site: SiteConfig
    database_url: str
    redis_url: str
    session_secret: str
    data_keys: str
    public_url: str
    hq_url: str = ""
    license_token: str | None = None
    license_token_file: str | None = None
    hq_api_token: str = ""
    hq_master_secret: str = ""
    hq_public_key: str = ""
    admin_password: str | None = None
    catalog_sync_seconds: float = 5.0
    license_recheck_seconds: float = 5.0
    pool_size: int = 20
    min_withdrawal_fen: int = 10000
    pii_pepper: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(mode={self.mode!r}, site={self.site.site!r}, url={self.public_url!r})"


def load_settings(mode: Mode | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    mode = mode or env.get("KAMENG_MODE", "subsite")  # type: ignore[assignment]
    if mode not in ("hq", "subsite"):
        raise ConfigError("KAMENG_MODE must be hq or subsite")
    try:
        site = load_site_config(env=env)
    except SiteConfigError:
        if mode != "hq":
            raise
        site = SiteConfig(site="hq", display_name="HQ")  # HQ may run without a site config
    sub = mode == "subsite"
    return Settings(
        mode=mode,
        site=site,
        database_url=read_secret("KAMENG_DATABASE_URL", env) or "",
        redis_url=read_secret("KAMENG_REDIS_URL", env) or "",
        session_secret=read_secret("KAMENG_SESSION_SECRET", env) or "",
        data_keys=read_secret("KAMENG_DATA_KEYS", env) or "",
        public_url=env.get("KAMENG_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/"),
        hq_url=(env.get("KAMENG_HQ_URL") or site.hq_url).rstrip("/"),
        # Inline token only; a file-mounted token is read (and re-read) by the LicenseGuard.
        license_token=(env.get("KAMENG_LICENSE_TOKEN") or None) if sub else None,
        license_token_file=secret_path("KAMENG_LICENSE_TOKEN", env) if sub else None,
        hq_api_token=(read_secret("KAMENG_HQ_API_TOKEN", env) or "") if sub else "",
        hq_master_secret=(read_secret("KAMENG_HQ_MASTER_SECRET", env) or "") if not sub else "",
        hq_public_key=read_secret("KAMENG_HQ_PUBLIC_KEY", env, required=False)
        or site.hq_public_key,
        admin_password=read_secret("KAMENG_ADMIN_PASSWORD", env, required=False),
        catalog_sync_seconds=float(env.get("KAMENG_CATALOG_SYNC_SECONDS", "5")),
        license_recheck_seconds=float(env.get("KAMENG_LICENSE_RECHECK_SECONDS", "5")),
        pool_size=int(env.get("KAMENG_DB_POOL_SIZE", "20")),
        min_withdrawal_fen=to_fen(env.get("KAMENG_MIN_WITHDRAWAL", "100.00")),
        pii_pepper=env.get("KAMENG_PII_PEPPER", "").encode(),
    )
