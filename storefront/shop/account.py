"""Customer accounts on a sub-site: sign-up, login, the wallet page and top-ups.

Customers are not staff: their own table, their own session table and cookie key
(:data:`CUSTOMER_SESSIONS`), on the staff's session mechanism
(:func:`~kameng_storefront.web.staff.open_session`). Routes stay thin; the rules are in
:mod:`.wallet`.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..state import state_of
from ..web.render import csrf_ok, error_page, render
from ..web.staff import PASSWORD_MIN, SessionKind, close_session, open_session, session_id
from ..web.throttle import LOGIN_PER_ACCOUNT_CLIENT, LOGIN_PER_CLIENT, client_subject
from .wallet import (
    CUSTOMER_SESSION_TTL,
    TOPUP_MAX_FEN,
    TOPUP_MIN_FEN,
    TOPUP_REFUSALS,
    Customer,
    WalletRefused,
    authenticate,
    customer_by_session,
    open_topup,
    sign_up,
    wallet_of,
)

log = logging.getLogger("kameng.storefront.account")
ACCOUNT_PATH = "/account"
ACCOUNT_LOGIN_PATH = "/account/login"
# keep=None: a customer's login or logout leaves a staff session in the same browser alone.
CUSTOMER_SESSIONS = SessionKind("customer_sessions", "customer_id", "cid", CUSTOMER_SESSION_TTL,
                                keep=None)


async def current_customer(request: Request) -> Customer | None:
    """The logged-in customer of this request (checked against the database, once)."""
    cached = getattr(request.state, "customer", False)
    if cached is not False:
        return cached
    sid = session_id(request, CUSTOMER_SESSIONS)
    customer = await customer_by_session(state_of(request), sid) if sid else None
    request.state.customer = customer
    return customer


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _form_page(request: Request, section: str, status_code: int = 200, problem: str = "",
               email: str = "") -> Response:
    return render(request, "shop/account.html", status_code=status_code, section=section,
                  problem=problem, email=email, min_length=PASSWORD_MIN)


async def login_page(request: Request) -> Response:
    return _form_page(request, "login")


async def signup_page(request: Request) -> Response:
    return _form_page(request, "signup")


async def login_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    email = str(form.get("email", "")).strip().lower()[:200]
    client = client_subject(_ip(request))
    # The staff login's limits, on a subject of its own: failing on customers never
    # locks a member out, and the other way round.
    checks = ((LOGIN_PER_ACCOUNT_CLIENT, (f"customer:{email}", client)),
              (LOGIN_PER_CLIENT, (f"customer:{client}",)))
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    customer = await authenticate(state, email, str(form.get("password", "")))
    if customer is None:
        await state.throttle.failed(state.redis, checks)
        return _form_page(request, "login", 401, "login_failed", email)
    await open_session(request, CUSTOMER_SESSIONS, customer.id)
    return RedirectResponse(ACCOUNT_PATH, status_code=303)


async def signup_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    email = str(form.get("email", ""))[:300]
    # Sign-ups cost an argon2 hash each: the per-client limit keeps one client from
    # turning them into load (or into a stream of throwaway wallets).
    checks = ((LOGIN_PER_CLIENT, (f"customer-signup:{client_subject(_ip(request))}",)),)
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    try:
        customer = await sign_up(state, email, str(form.get("password", "")),
                                 str(form.get("confirm", "")))
    except WalletRefused as exc:
        await state.throttle.failed(state.redis, checks)
        return _form_page(request, "signup", 400, exc.code, email.strip())
    log.info("customer signed up", extra={"customer": customer.id})
    await open_session(request, CUSTOMER_SESSIONS, customer.id)
    return RedirectResponse(ACCOUNT_PATH, status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    if csrf_ok(request, form):
        await close_session(request, CUSTOMER_SESSIONS)
    return RedirectResponse("/", status_code=303)


async def account_page(request: Request) -> Response:
    customer = await current_customer(request)
    if customer is None:
        return RedirectResponse(ACCOUNT_LOGIN_PATH, status_code=303)
    balance, moves = await wallet_of(state_of(request), customer.id)
    return render(request, "shop/account.html", section="wallet", customer=customer,
                  balance=balance, moves=moves, problem=_shown_problem(request),
                  topup_min=TOPUP_MIN_FEN, topup_max=TOPUP_MAX_FEN)


def _shown_problem(request: Request) -> str:
    # Only keys the top-up can produce: the query string is the visitor's to write.
    problem = request.query_params.get("problem", "")
    return problem if problem in TOPUP_REFUSALS else ""


async def topup_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    customer = await current_customer(request)
    if customer is None:
        return RedirectResponse(ACCOUNT_LOGIN_PATH, status_code=303)
    if state.effective_mode() != "normal":
        return error_page(request, 403, "read_only")
    try:
        pay_url = await open_topup(state, customer, str(form.get("amount", "")), _ip(request))
    except WalletRefused as exc:
        if exc.code == "unavailable_body":
            return error_page(request, 502, exc.code)
        return RedirectResponse(f"{ACCOUNT_PATH}?problem={exc.code}", status_code=303)
    return RedirectResponse(pay_url, status_code=303)


def routes() -> list[Route]:
    return [
        Route(ACCOUNT_PATH, account_page),
        Route(ACCOUNT_LOGIN_PATH, login_page),
        Route(ACCOUNT_LOGIN_PATH, login_submit, methods=["POST"]),
        Route("/account/signup", signup_page),
        Route("/account/signup", signup_submit, methods=["POST"]),
        Route("/account/logout", logout, methods=["POST"]),
        Route("/account/topup", topup_submit, methods=["POST"]),
    ]
