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


# The operator's mark on what it creates, carrying the SubSite's uid: a PostgreSQL
# COMMENT on the role and the database, a field of the Redis owners hash. An object
# without it (or with another SubSite's uid) is never adopted, changed or dropped.
MARK_PREFIX = "kameng:subsite-uid="
REDIS_OWNERS_KEY = "kameng:acl-owners"  # admin-only: no site user's key pattern matches


def mark(uid: str) -> str:
    return MARK_PREFIX + uid


def marked_uid(comment: str | None) -> str | None:
    """The uid in a mark, or None for an unmarked object."""
    if comment and comment.startswith(MARK_PREFIX):
        return comment[len(MARK_PREFIX):].strip() or None
    return None
