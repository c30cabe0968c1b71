"""Names of a site's database objects and Redis user, and its password generator."""

from __future__ import annotations

import secrets

PASSWORD_BYTES = 32


def pg_identifier(site: str) -> str:
    """Role and database name: ``kameng_<site>`` (a SubSite name is at most 56 chars,
    so this stays within PostgreSQL's 63-byte identifier limit)."""
    return "kameng_" + site.replace("-", "_")


def redis_user(site: str) -> str:
    return f"kameng-site-{site}"


def new_password() -> str:
    """32 random bytes, URL-safe so it can sit in a DSN or URL without escaping."""
    return secrets.token_urlsafe(PASSWORD_BYTES)
