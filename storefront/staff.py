"""Staff accounts: login/logout, and the permission check every admin action goes through.

Sub-site roles and permissions come from the site config (the operator's RolePolicy), so
a role change takes effect on the next request; the database only holds password hashes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.siteconfig import PERMISSIONS

from .crypto import hash_password, verify_password
from .web import csrf_ok, error_page, render

log = logging.getLogger("kameng.storefront.staff")
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
    settings = request.app.state.settings
    if settings.mode == "hq":
        return Staff(email, "hq-admin", frozenset(PERMISSIONS)) if email == HQ_ADMIN_EMAIL else None
    member = next((m for m in settings.site.members if m.email == email), None)
    if member is None:  # removed from the config since login: no access
        return None
    return Staff(email, member.role, settings.site.permissions_for(member.role))


def require(request: Request, permission: str) -> Response | Staff:
    """The staff member if allowed; else a redirect to login (anonymous) or a 403 page."""
    staff = current_staff(request)
    if staff is None:
        return RedirectResponse("/admin/login", status_code=303)
    if permission not in staff.permissions:
        log.info(
            "admin action refused",
            extra={"staff": staff.email, "role": staff.role, "permission": permission},
        )
        return error_page(request, 403, "forbidden")
    return staff


async def bootstrap_staff(state: Any) -> None:
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


async def set_password(state: Any, email: str, password: str) -> bool:
    async with state.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE staff SET password_hash = %s WHERE email = %s", (hash_password(password), email)
        )
    return bool(cur.rowcount)


async def login_page(request: Request) -> Response:
    return render(request, "admin/login.html", failed=False)


async def login_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    email = str(form.get("email", "")).strip().lower()
    password = str(form.get("password", ""))
    throttle = request.app.state.throttle
    keys = (f"login-ip:{request.client.host if request.client else ''}", f"login-user:{email}")
    if any(throttle.blocked(k) for k in keys):
        return error_page(request, 429, "too_many_attempts")
    async with request.app.state.pool.connection() as conn:
        row = await (
            await conn.execute("SELECT password_hash FROM staff WHERE lower(email) = %s", (email,))
        ).fetchone()
    if not verify_password(row["password_hash"] if row else None, password):
        log.info("login failed", extra={"staff": email[:100]})
        for k in keys:
            throttle.failed(k)
        return render(request, "admin/login.html", status_code=401, failed=True)
    # New session content on login: a pre-login session id/CSRF token is not reused.
    lang = request.session.get("lang")
    request.session.clear()
    request.session["staff"] = email
    if lang:
        request.session["lang"] = lang
    log.info("login", extra={"staff": email})
    return RedirectResponse("/admin", status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    if csrf_ok(request, form):
        request.session.clear()
    return RedirectResponse("/", status_code=303)


def login_routes() -> list[Route]:
    return [
        Route("/admin/login", login_page),
        Route("/admin/login", login_submit, methods=["POST"]),
        Route("/admin/logout", logout, methods=["POST"]),
    ]
