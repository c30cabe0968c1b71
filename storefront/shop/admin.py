"""Sub-site back office (mounted at ``/admin``). Each route declares its permission once
with ``@requires``; the data and rules live in :mod:`.backoffice` and :mod:`.balance`."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts import invitation
from kameng.contracts.money import MoneyError, to_fen

from ..state import state_of
from ..web.auth import invitation_routes, login_routes, requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff, manage_refusal, member_of, member_overview, reset_member
from . import backoffice, wallet
from .balance import finance_overview, request_withdrawal
from .catalog import sync_catalog
from .kpis import routes as kpi_routes
from .orders import refund
from .plans import requires_feature
from .plans import routes as plan_routes
from .requests import hold_refund, sync_money_approvals
from .settlement import hq_settlement, hq_statement_csv
from .tickets import routes as ticket_routes

log = logging.getLogger("kameng.storefront.admin")

# Messages shown after a withdrawal request (query string of the redirect).
_WITHDRAWAL_MESSAGES = {
    None: "withdrawal+requested",
    "below_minimum": "withdrawal+below+minimum",
    "exceeds_balance": "withdrawal+exceeds+balance",
}


async def _form(request: Request) -> Any:
    form = await request.form()
    return form if csrf_ok(request, form) else None


def _done(msg: str) -> Response:
    return RedirectResponse(f"/admin?msg={msg}", status_code=303)


def _page(request: Request, staff: Staff, section: str, **ctx: Any) -> Response:
    return render(request, "admin/page.html", me=staff, section=section,
                  message=request.query_params.get("msg", ""), **ctx)


@requires()
async def dashboard(request: Request, staff: Staff) -> Response:
    guard = state_of(request).license
    return _page(request, staff, "dashboard",
                 license_notice=guard.term_notice() if guard is not None else None)


@requires("catalog:read")
async def products(request: Request, staff: Staff) -> Response:
    items, sync_state = await backoffice.products_overview(state_of(request))
    return _page(request, staff, "products", items=items, catalog_state=sync_state)


@requires("catalog:write")
async def catalog_sync(request: Request, staff: Staff) -> Response:
    if await _form(request) is None:
        return error_page(request, 400, "bad_request")
    return _done(f"sync+{await sync_catalog(state_of(request))}")


@requires("orders:read")
async def orders_list(request: Request, staff: Staff) -> Response:
    return _page(request, staff, "orders", orders=await backoffice.recent_orders(state_of(request)))


@requires("orders:refund")
async def order_refund(request: Request, staff: Staff) -> Response:
    if await _form(request) is None:
        return error_page(request, 400, "bad_request")
    oid = request.path_params["oid"]
    # Above the RolePolicy's limit the refund waits for HQ (requests.hold_refund).
    if await hold_refund(state_of(request), oid, staff.email):
        return _done("refund+awaiting+HQ+approval")
    # The rule decides: refunded (before delivery), disputed (after: HQ decides),
    # refund_pending (the channel failed: the sweep finishes it) or busy (delivery running).
    result = await refund(state_of(request), oid, reason=f"staff:{staff.email}", by=staff.email)
    log.info("refund by staff", extra={"order": oid, "staff": staff.email, "result": result})
    return _done(f"refund+{result}")


@requires("customers:read")
async def customers(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    people = await backoffice.customers(state)
    # Masked like the contacts above: the back office needs to tell accounts apart and
    # see their money, not to collect addresses.
    wallets = [{**w, "email": backoffice.mask_contact(w["email"])}
               for w in await wallet.wallets_overview(state)]
    return _page(request, staff, "customers", people=people, wallets=wallets)


@requires("customers:read")
async def customer_wallet(request: Request, staff: Staff) -> Response:
    try:
        cid = int(request.path_params["cid"])
    except ValueError:
        return error_page(request, 404, "not_found")
    balance, moves = await wallet.wallet_of(state_of(request), cid, limit=200)
    return _page(request, staff, "wallet", cid=cid, balance=balance, moves=moves)


@requires("customers:manage")
async def customer_block(request: Request, staff: Staff) -> Response:
    form = await _form(request)
    if form is None or not str(form.get("contact", "")).strip():
        return error_page(request, 400, "bad_request")
    await backoffice.block_contact(state_of(request), str(form["contact"]))
    return _done("blocked")


@requires("marketing:manage")
@requires_feature("marketing")
async def marketing(request: Request, staff: Staff) -> Response:
    coupons, news = await backoffice.marketing(state_of(request))
    return _page(request, staff, "marketing", coupons=coupons, news=news)


@requires("marketing:manage")
@requires_feature("marketing")
async def coupon_create(request: Request, staff: Staff) -> Response:
    form = await _form(request)
    try:
        coupon = backoffice.coupon_from_form(form)
    except (TypeError, KeyError, ValueError):
        return error_page(request, 400, "bad_request")
    await backoffice.save_coupon(state_of(request), coupon)
    return _done("coupon+saved")


@requires("marketing:manage")
@requires_feature("marketing")
async def announcement_create(request: Request, staff: Staff) -> Response:
    form = await _form(request)
    if form is None or not str(form.get("title", "")).strip():
        return error_page(request, 400, "bad_request")
    await backoffice.add_announcement(
        state_of(request), str(form["title"]), str(form.get("body", ""))
    )
    return _done("announcement+saved")


@requires("finance:read")
async def finance(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    balance, withdrawals = await finance_overview(state)
    settlement = await hq_settlement(state)
    return _page(request, staff, "finance", balance=balance, withdrawals=withdrawals,
                 min_withdrawal=state.settings.min_withdrawal_fen, settlement=settlement,
                 outcomes={w.withdrawal_id: w for w in settlement.withdrawals}
                 if settlement else {})


@requires("finance:read")
async def statement_download(request: Request, staff: Staff) -> Response:
    period = request.path_params["period"]
    body = await hq_statement_csv(state_of(request), period)  # checks the period's form
    if body is None:
        return error_page(request, 404, "not_found")
    return Response(body, media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="statement-{period}.csv"'})


@requires("finance:withdraw")
async def withdraw(request: Request, staff: Staff) -> Response:
    form = await _form(request)
    try:
        amount = to_fen(str(form["amount"]).strip())  # type: ignore[index]
    except (TypeError, KeyError, MoneyError):
        return error_page(request, 400, "bad_request")
    outcome = await request_withdrawal(state_of(request), amount, staff.email)
    if outcome.awaiting_approval:  # above the RolePolicy's limit: reserved, HQ decides
        await sync_money_approvals(state_of(request))
        return _done("withdrawal+awaiting+HQ+approval")
    return _done(_WITHDRAWAL_MESSAGES[outcome.refused])


@requires("finance:reconcile")
async def reconcile(request: Request, staff: Staff) -> Response:
    rows = await backoffice.reconcile_rows(state_of(request))
    return Response(
        backoffice.reconcile_csv(rows),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="reconcile.csv"'},
    )


@requires("settings:write")
async def settings_page(request: Request, staff: Staff) -> Response:
    values = await backoffice.settings_values(state_of(request))
    return _page(request, staff, "settings", values=values)


@requires("settings:write")
async def settings_save(request: Request, staff: Staff) -> Response:
    form = await _form(request)
    if form is None:
        return error_page(request, 400, "bad_request")
    await backoffice.save_settings(state_of(request), form)
    return _done("settings+saved")


@requires("members:manage")
async def members(request: Request, staff: Staff) -> Response:
    return await _members_page(request, staff)


async def _members_page(request: Request, staff: Staff, status_code: int = 200,
                        **ctx: Any) -> Response:
    state = state_of(request)
    accounts = await member_overview(state)
    rows = [
        {"member": m, "role_permissions": sorted(state.settings.site.permissions_for(m.role)),
         "has_password": bool(accounts.get(m.email.lower(), {}).get("has_password")),
         "sessions": int(accounts.get(m.email.lower(), {}).get("sessions") or 0),
         "refusal": manage_refusal(staff, m.email, state.settings.site.permissions_for(m.role))}
        for m in state.settings.site.members
    ]
    response = render(request, "admin/page.html", status_code=status_code, me=staff,
                      section="members", rows=rows,
                      message=request.query_params.get("msg", ""), **ctx)
    # The page may carry a one-time invitation link: no cache keeps a copy.
    response.headers["Cache-Control"] = "no-store"
    return response


@requires("members:manage")
async def member_reset(request: Request, staff: Staff) -> Response:
    """Reset another member's credential: their sessions end, their password is removed,
    and the manager gets a one-time invitation link to hand over. Refused (403, with the
    reason) on one's own account and on anyone holding a permission the actor lacks."""
    form = await _form(request)
    if form is None:
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    email = str(form.get("email", "")).strip().lower()
    member = member_of(state, email)
    if member is None:
        return error_page(request, 404, "unknown_member")
    refusal = manage_refusal(staff, member.email, state.settings.site.permissions_for(member.role))
    if refusal:
        log.warning("member reset refused", extra={"staff": staff.email, "member": email,
                                                   "reason": refusal})
        return error_page(request, 403, refusal)
    token = await reset_member(state, member.email, invitation.DEFAULT_TTL_SECONDS)
    log.info("member credential reset", extra={"staff": staff.email, "member": email})
    link = invitation.invitation_url(state.settings.public_url, token)
    return await _members_page(request, staff, reset_member_email=member.email,
                               invitation_link=link)


def routes() -> list[Route]:
    """Relative to the ``/admin`` mount (the dashboard itself is ``/admin``)."""
    return [
        Route("/products", products),
        Route("/catalog/sync", catalog_sync, methods=["POST"]),
        Route("/orders", orders_list),
        Route("/orders/{oid}/refund", order_refund, methods=["POST"]),
        Route("/customers", customers),
        Route("/customers/{cid}/wallet", customer_wallet),
        Route("/customers/block", customer_block, methods=["POST"]),
        Route("/marketing", marketing),
        Route("/coupons", coupon_create, methods=["POST"]),
        Route("/announcements", announcement_create, methods=["POST"]),
        Route("/finance", finance),
        Route("/statements/{period:str}.csv", statement_download),
        Route("/withdrawals", withdraw, methods=["POST"]),
        Route("/reconcile", reconcile),
        Route("/settings", settings_page),
        Route("/settings", settings_save, methods=["POST"]),
        Route("/members", members),
        Route("/members/reset", member_reset, methods=["POST"]),
        *kpi_routes(),
        *ticket_routes(),
        *plan_routes(),
        *login_routes(),
        *invitation_routes(),
    ]
