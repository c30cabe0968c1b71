"""Staff login/logout, self-service password change, invitations, and the one permission
guard, declared once per route.

``@requires("orders:refund")`` wraps a handler ``(request, staff) -> Response``: an
anonymous visitor (or one whose session ended) is redirected to the login page, an account
that must replace its bootstrap password is sent to the password page, a member without
the permission gets the 403 page, everyone else reaches the handler with their
:class:`Staff`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..crypto import verify_password
from ..state import AppState, state_of
from .render import csrf_ok, error_page, render
from .staff import (
    PASSWORD_MIN,
    InvitationRefused,
    Staff,
    change_password,
    current_staff,
    end_session,
    inspect_invitation,
    password_hash,
    redeem_invitation,
    start_session,
)
from .throttle import (
    INVITE_PER_CLIENT,
    LOGIN_PER_ACCOUNT_CLIENT,
    LOGIN_PER_CLIENT,
    PASSWORD_PER_ACCOUNT,
    client_subject,
)

log = logging.getLogger("kameng.storefront.staff")
LOGIN_PATH = "/admin/login"
PASSWORD_PATH = "/admin/password"  # noqa: S105 - a path

StaffHandler = Callable[[Request, Staff], Awaitable[Response]]


def requires(
    permission: str | None = None, *, pending_change_ok: bool = False,
) -> Callable[[StaffHandler], Callable[[Request], Awaitable[Response]]]:
    """Route guard; ``permission=None`` only requires a logged-in staff member.
    ``pending_change_ok`` lets an account that must change its password in (the password
    page itself); every other page sends it there first."""

    def wrap(handler: StaffHandler) -> Callable[[Request], Awaitable[Response]]:
        # wraps keeps the handler's name: it is the request metrics' route label.
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            staff = await current_staff(request)
            if staff is None:
                return RedirectResponse(LOGIN_PATH, status_code=303)
            if staff.must_change_password and not pending_change_ok:
                return RedirectResponse(PASSWORD_PATH, status_code=303)
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


def _client(request: Request) -> str:
    return client_subject(request.client.host if request.client else "")


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
    client = _client(request)
    checks = ((LOGIN_PER_ACCOUNT_CLIENT, (email, client)), (LOGIN_PER_CLIENT, (client,)))
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    if not verify_password(await password_hash(state, email), password):
        log.info("login failed", extra={"staff": email[:100]})
        await state.throttle.failed(state.redis, checks)
        return render(request, "admin/login.html", status_code=401, failed=True)
    await start_session(request, email)
    staff = await current_staff(request)
    if staff is None:  # a hash without an account (removed member): no way in
        await end_session(request)
        return render(request, "admin/login.html", status_code=401, failed=True)
    log.info("login", extra={"staff": email})
    return RedirectResponse(PASSWORD_PATH if staff.must_change_password else "/admin",
                            status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    if csrf_ok(request, form):
        await end_session(request)
    return RedirectResponse("/", status_code=303)


def _password_page(request: Request, staff: Staff, status_code: int = 200,
                   problem: str = "") -> Response:
    return render(request, "admin/password.html", status_code=status_code, me=staff,
                  problem=problem, min_length=PASSWORD_MIN)


@requires(pending_change_ok=True)
async def password_page(request: Request, staff: Staff) -> Response:
    return _password_page(request, staff)


@requires(pending_change_ok=True)
async def password_submit(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    checks = ((PASSWORD_PER_ACCOUNT, (staff.email,)),)
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    problem = await change_password(
        state, staff, str(form.get("current", "")), str(form.get("new", "")),
        str(form.get("confirm", "")),
    )
    if problem:
        if problem == "password_wrong":
            await state.throttle.failed(state.redis, checks)
        return _password_page(request, staff, 400, problem)
    # Every session of the member ended with the change; this browser gets a new one.
    await start_session(request, staff.email)
    log.info("password changed", extra={"staff": staff.email})
    return RedirectResponse("/admin?msg=password+changed", status_code=303)


def _refused_invitation(request: Request, key: str) -> Response:
    # 404 for a link that never was valid here, 410 for one that was and is no more.
    return render(request, "admin/invite.html", status_code=404 if key == "invitation_invalid"
                  else 410, member=None, problem=key, token="")


async def _invite_page(request: Request, state: AppState, token: str, status_code: int = 200,
                       problem: str = "") -> Response:
    try:
        member = await inspect_invitation(state, token)
    except InvitationRefused as e:
        return _refused_invitation(request, e.key)
    response = render(request, "admin/invite.html", status_code=status_code, member=member,
                      problem=problem, token=token, min_length=PASSWORD_MIN)
    # The URL is a credential: keep it out of caches and out of other sites' Referer.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def invite_page(request: Request) -> Response:
    return await _invite_page(request, state_of(request), request.path_params["token"])


async def invite_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    token = request.path_params["token"]
    checks = ((INVITE_PER_CLIENT, (_client(request),)),)
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    try:
        email = await redeem_invitation(state, token, str(form.get("password", "")),
                                        str(form.get("confirm", "")))
    except InvitationRefused as e:
        if e.key.startswith("invitation_"):
            # Only a token that was never genuine counts as a guess; a used or expired
            # one was signed by the site and says nothing about guessing.
            if e.key == "invitation_invalid":
                await state.throttle.failed(state.redis, checks)
            return _refused_invitation(request, e.key)
        return await _invite_page(request, state, token, 400, e.key)
    await start_session(request, email)
    log.info("invitation redeemed", extra={"staff": email})
    return RedirectResponse("/admin?msg=password+set", status_code=303)


def login_routes() -> list[Route]:
    """Relative to the ``/admin`` mount (both modes)."""
    return [
        Route("/login", login_page),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/password", password_page),
        Route("/password", password_submit, methods=["POST"]),
    ]


def invitation_routes() -> list[Route]:
    """Relative to the ``/admin`` mount (sub-sites: HQ's one account has no invitation)."""
    return [
        Route("/invite/{token}", invite_page),
        Route("/invite/{token}", invite_submit, methods=["POST"]),
    ]
