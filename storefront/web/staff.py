"""Staff accounts: who is logged in, with which permissions, and their password hashes.

Sub-site roles and permissions come from the site config (the operator's RolePolicy), so
a role change takes effect on the next request; the database only holds password hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from kameng.contracts.siteconfig import PERMISSIONS

from ..crypto import hash_password
from ..state import AppState, state_of

HQ_ADMIN_EMAIL = "admin@hq.local"


@dataclass(frozen=True)
class Staff:
    email: str
    role: str
    permissions: frozenset[str]


def current_staff(request: Request) -> Staff | None:
    email = request.session.get("staff")
    if not email:
        return None
    settings = state_of(request).settings
    if settings.mode == "hq":
        return Staff(email, "hq-admin", frozenset(PERMISSIONS)) if email == HQ_ADMIN_EMAIL else None
    member = next((m for m in settings.site.members if m.email == email), None)
    if member is None:  # removed from the config since login: no access
        return None
    return Staff(email, member.role, settings.site.permissions_for(member.role))


async def bootstrap_staff(state: AppState) -> None:
    """Create accounts for HQ's admin / the config's members; set the bootstrap password
    only where none is set yet (a changed password is never overwritten)."""
    settings = state.settings
    if settings.mode == "hq":
        people = [(HQ_ADMIN_EMAIL, "admin")]
    else:
        people = [(m.email, m.name) for m in settings.site.members]
    pw_hash = hash_password(settings.admin_password) if settings.admin_password else None
    async with state.pool.connection() as conn:
        for email, name in people:
            await conn.execute(
                "INSERT INTO staff (email, name, password_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name,"
                " password_hash = COALESCE(staff.password_hash, EXCLUDED.password_hash)",
                (email, name, pw_hash),
            )


async def set_password(state: AppState, email: str, password: str) -> bool:
    async with state.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE staff SET password_hash = %s WHERE email = %s", (hash_password(password), email)
        )
    return bool(cur.rowcount)


async def password_hash(state: AppState, email: str) -> str | None:
    """The stored hash of ``email`` (case-insensitive), ``None`` if unknown or unset."""
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute("SELECT password_hash FROM staff WHERE lower(email) = %s", (email,))
        ).fetchone()
    return row["password_hash"] if row else None
