"""HQ's pages: the public catalogue, the sandbox pay pages, and the catalogue admin."""

from __future__ import annotations

import logging

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from kameng.contracts.hq_api import (
    PAY_LINK_PATH,
    PAY_PAGE_PATH,
    LinkError,
    PaymentLink,
    verify_payment_link,
)
from kameng.contracts.hq_auth import SiteCredential
from kameng.contracts.money import MoneyError

from ..state import state_of
from ..web.auth import login_routes, requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from .approvals import admin_routes as approval_admin_routes
from .catalog import catalog_changed, load_catalog, product_from_form, save_product
from .inventory import UnknownProduct, import_keys, parse_csv
from .kpis import routes as kpi_routes
from .notifications import notify_payment
from .onboarding import admin_routes as onboarding_admin_routes
from .onboarding import public_routes as onboarding_public_routes
from .payments import (
    AmountMismatch,
    BadSiteUrl,
    confirm_payment,
    find_payment,
    get_payment,
    open_payment,
)
from .plans import routes as plan_routes
from .renewals import routes as renewal_routes
from .review import routes as review_routes
from .statements import routes as statement_routes
from .tickets import routes as ticket_routes

log = logging.getLogger("kameng.storefront.hq")


async def home(request: Request) -> Response:
    catalog = await load_catalog(state_of(request).pool)
    return render(request, "hq/index.html", products=catalog.products)


def _sandbox_refused(request: Request) -> Response | None:
    """The sandbox pay page runs only where a person enabled it (see announce_sandbox)."""
    if state_of(request).settings.sandbox_payments:
        return None
    log.warning("sandbox pay page refused: KAMENG_SANDBOX_PAYMENTS is not enabled")
    return error_page(request, 503, "sandbox_disabled")


async def pay_page(request: Request) -> Response:
    if refused := _sandbox_refused(request):
        return refused
    payment = await get_payment(state_of(request).pool, request.path_params["pid"])
    if payment is None:
        return error_page(request, 404, "not_found")
    return render(request, "hq/pay.html", payment=payment, action=request.url.path)


async def pay_confirm(request: Request) -> Response:
    if refused := _sandbox_refused(request):
        return refused
    return await _confirm(request, request.path_params["pid"])


async def _confirm(request: Request, payment_id: str) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    payment = await confirm_payment(state.pool, payment_id)
    if payment is None:
        return error_page(request, 404, "not_found")
    task = BackgroundTask(notify_payment, state, payment) if payment["status"] == "paid" else None
    return RedirectResponse(payment["return_url"], status_code=303, background=task)


async def _followed_link(request: Request) -> tuple[PaymentLink, SiteCredential] | Response:
    """The link of the request's path and the registry entry its signature was checked
    with, or the page refusing it (the sandbox channel disabled, a bad link)."""
    if refused := _sandbox_refused(request):
        return refused
    state = state_of(request)
    entries: dict[str, SiteCredential] = {}

    def key_of(site: str) -> str | None:
        entry = state.credentials.get(site) if state.credentials is not None else None
        if entry is None:
            return None
        entries[site] = entry
        return entry.payment_link_key()

    try:
        link = verify_payment_link(request.path_params["token"], key_of)
    except LinkError as exc:
        log.warning("pay link refused", extra={"reason": exc.reason})
        if exc.reason == "expired":
            return error_page(request, 410, "pay_link_expired")
        return error_page(request, 404, "not_found")
    return link, entries[link.site]


async def pay_link(request: Request) -> Response:
    """A site's signed pay link: the payment is opened when it is first followed (a second
    visit finds the same payment), then paid on this same page."""
    followed = await _followed_link(request)
    if isinstance(followed, Response):
        return followed
    link, entry = followed
    pool = state_of(request).pool
    if entry.state != "active":
        # A suspended site opens no new payment; one its customer opened before still
        # shows, as its pay page does.
        payment = await find_payment(pool, link.site, link.order_id)
        if payment is None:
            log.warning("pay link of a suspended site", extra={"site": link.site})
            return error_page(request, 403, "pay_site_suspended")
    else:
        try:
            payment = await open_payment(pool, link.site, link, entry.urls)
        except (BadSiteUrl, AmountMismatch) as exc:
            log.warning("pay link refused",
                        extra={"site": link.site, "reason": type(exc).__name__})
            return error_page(request, 400, "bad_request")
    return render(request, "hq/pay.html", payment=payment, action=request.url.path)


async def pay_link_confirm(request: Request) -> Response:
    followed = await _followed_link(request)
    if isinstance(followed, Response):
        return followed
    link, _ = followed
    payment = await find_payment(state_of(request).pool, link.site, link.order_id)
    if payment is None:  # paid before it was opened: only a forged form does that
        return error_page(request, 404, "not_found")
    return await _confirm(request, payment["id"])


@requires()
async def admin_home(request: Request, staff: Staff) -> Response:
    catalog = await load_catalog(state_of(request).pool)
    return render(request, "hq/admin.html", products=catalog.products,
                  message=request.query_params.get("msg", ""))


@requires()
async def admin_product(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    try:
        product = product_from_form(form)
    except (KeyError, ValueError, MoneyError):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    await save_product(state.pool, product)
    await catalog_changed(state)
    return RedirectResponse("/admin?msg=saved", status_code=303)


@requires()
async def admin_import(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    upload = form.get("file")
    text = ""
    if upload is not None and hasattr(upload, "read"):
        text = (await upload.read()).decode("utf-8-sig")
    text = text or str(form.get("csv", ""))
    state = state_of(request)
    try:
        rows = parse_csv(text, str(form.get("product", "")) or None)
        imported, dupes = await import_keys(
            state.pool, state.cipher, state.settings.hq_master_secret, rows
        )
    except (ValueError, UnknownProduct):
        return error_page(request, 400, "bad_request")
    log.info("card keys imported", extra={"imported": imported, "duplicates": dupes})
    await catalog_changed(state)
    return RedirectResponse(f"/admin?msg=imported+{imported}+duplicates+{dupes}", status_code=303)


def routes() -> list[Route | Mount]:
    return [
        Route("/", home),
        Route(PAY_PAGE_PATH, pay_page),
        Route(PAY_LINK_PATH, pay_link),
        Route(PAY_LINK_PATH, pay_link_confirm, methods=["POST"]),
        Route(PAY_PAGE_PATH, pay_confirm, methods=["POST"]),
        *onboarding_public_routes(),
        Route("/admin", admin_home),
        Mount("/admin", routes=[
            *onboarding_admin_routes(),
            *approval_admin_routes(),
            Route("/products", admin_product, methods=["POST"]),
            Route("/keys", admin_import, methods=["POST"]),
            *statement_routes(),
            *review_routes(),
            *renewal_routes(),
            *kpi_routes(),
            *plan_routes(),
            *ticket_routes(),
            *login_routes(),
        ]),
    ]
