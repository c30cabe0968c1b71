"""The site's credentials: reuse what its Secrets already hold, generate what is missing.

Keys are generated once and then read back from the Secret on every reconcile, so an
operator restart or a spec change never rotates them by accident.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from kameng.children.secrets import unb64
from kameng.contracts import pod
from kameng.provision.names import new_password


@dataclass(frozen=True)
class Existing:
    db_password: str | None
    redis_password: str | None
    session_secret: str | None
    data_key: str | None
    hq_api_token: str | None = None

    def __repr__(self) -> str:
        return "Existing(<redacted>)"


def _password_of(url: str) -> str | None:
    if not url:
        return None
    pw = urlsplit(url).password
    return unquote(pw) if pw else None


def read_existing(found: dict[str, dict[str, Any] | None]) -> Existing:
    """``found`` maps Secret name → live Secret (or None)."""
    def data(entry: pod.SecretKey) -> str:
        obj = found.get(entry.secret) or {}
        return unb64((obj.get("data") or {}).get(entry.key))

    return Existing(
        db_password=_password_of(data(pod.DB_DSN)),
        redis_password=_password_of(data(pod.REDIS_URL)),
        session_secret=data(pod.SESSION_SECRET) or None,
        data_key=data(pod.DATA_KEYS) or None,
        hq_api_token=data(pod.HQ_API_TOKEN) or None,
    )


def db_location(db_secret: dict[str, Any] | None) -> tuple[str, int] | None:
    """(host, port) of the DSN in the site's database Secret: where its database is."""
    dsn = unb64(((db_secret or {}).get("data") or {}).get(pod.DB_DSN.key))
    if not dsn:
        return None
    try:
        parts = urlsplit(dsn)
        return (parts.hostname or "", parts.port or 5432)
    except ValueError:
        return None


def new_session_secret() -> str:
    return secrets.token_urlsafe(48)


def new_data_key() -> str:
    """``kid:base64(32 bytes)`` — the storefront's AES-256-GCM key ring format."""
    return "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()


def or_new(value: str | None, factory: Any = new_password) -> tuple[str, bool]:
    """(value, generated now)."""
    return (value, False) if value else (factory(), True)
