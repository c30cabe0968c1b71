"""HQ's pages: the public catalogue, the sandbox pay page, and the catalogue admin."""

from __future__ import annotations

import logging

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from kameng.contracts.hq_api import PAY_PAGE_PATH
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
from .payments import confirm_payment, get_payment
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
    return render(request, "hq/pay.html", payment=payment)


async def pay_confirm(request: Request) -> Response:
    if refused := _sandbox_refused(request):
        return refused
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    payment = await confirm_payment(state.pool, request.path_params["pid"])
    if payment is None:
        return error_page(request, 404, "not_found")
    task = BackgroundTask(notify_payment, state, payment) if payment["status"] == "paid" else None
    return RedirectResponse(payment["return_url"], status_code=303, background=task)


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
