"""Staff login/logout and the one permission guard, declared once per route.

``@requires("orders:refund")`` wraps a handler ``(request, staff) -> Response``: an
anonymous visitor is redirected to the login page, a member without the permission gets
the 403 page, everyone else reaches the handler with their :class:`Staff`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..crypto import verify_password
from ..state import state_of
from .render import csrf_ok, error_page, render
from .staff import Staff, current_staff, password_hash
from .throttle import LOGIN_PER_ACCOUNT_CLIENT, LOGIN_PER_CLIENT, client_subject

log = logging.getLogger("kameng.storefront.staff")
LOGIN_PATH = "/admin/login"

StaffHandler = Callable[[Request, Staff], Awaitable[Response]]


def requires(
    permission: str | None = None,
) -> Callable[[StaffHandler], Callable[[Request], Awaitable[Response]]]:
    """Route guard; ``permission=None`` only requires a logged-in staff member."""

    def wrap(handler: StaffHandler) -> Callable[[Request], Awaitable[Response]]:
        # wraps keeps the handler's name: it is the request metrics' route label.
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            staff = current_staff(request)
            if staff is None:
                return RedirectResponse(LOGIN_PATH, status_code=303)
            if permission is not None and permission not in staff.permissions:
                log.info(
                    "admin action refused",
                    extra={"staff": staff.email, "role": staff.role, "permission": permission},
                )
                return error_page(request, 403, "forbidden")
            return await handler(request, staff)

        endpoint.permission = permission  # type: ignore[attr-defined]  # for tests / review
        return endpoint

    return wrap


async def login_page(request: Request) -> Response:
    return render(request, "admin/login.html", failed=False)


async def login_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    email = str(form.get("email", "")).strip().lower()
    password = str(form.get("password", ""))
    state = state_of(request)
    # Per (account, client) and per client, never per account alone: nobody can lock a
    # named member out by failing on purpose from elsewhere.
    client = client_subject(request.client.host if request.client else "")
    checks = ((LOGIN_PER_ACCOUNT_CLIENT, (email, client)), (LOGIN_PER_CLIENT, (client,)))
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    if not verify_password(await password_hash(state, email), password):
        log.info("login failed", extra={"staff": email[:100]})
        await state.throttle.failed(state.redis, checks)
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
    """Relative to the ``/admin`` mount."""
    return [
        Route("/login", login_page),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
