"""Change requests from the partner's back office (``/admin/requests``): the SubSite's
fields belong to HQ, so a change of payment methods, domain, price rules, hidden products
or members is sent to HQ (:data:`kameng.contracts.hq_api.APPROVALS_PATH`) and takes effect
when HQ has applied it to the SubSite — after approval where the site's RolePolicy lists
the kind (``approvals`` of the site config), at once otherwise. Each form carries a random
``request_key``, so a double submit is one request.

Money actions above the RolePolicy's ``approvalLimits`` (withdrawals, refunds) are held
here and in :mod:`.balance` and sent to HQ as requests of the action kinds
(:data:`kameng.contracts.hq_api.ACTION_PERMISSIONS`). :func:`money_approvals_loop` re-sends
each held action with its own ``request_key`` (HQ answers with the same request and its
current status: no list to page through, nothing lost while HQ was unreachable), makes it
exactly once when HQ has approved it and drops it when HQ has rejected it."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.api.subsite import PaymentMethod
from kameng.contracts.hq_api import CHANGE_PERMISSIONS, ChangeRequest, change_patch

from ..state import AppState, state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from .balance import WITHDRAW_ACTION, held_withdrawals, release_held_withdrawal
from .hq_client import HqError
from .orders import find_order, refund

log = logging.getLogger("kameng.storefront.requests")

PAYMENT_METHODS: tuple[str, ...] = PaymentMethod.__args__  # type: ignore[attr-defined]
# URL segment → the change's kind.
KIND_OF = {
    "payments": "payments.methods",
    "domain": "domain",
    "price-rules": "catalog.priceRules",
    "hidden-products": "catalog.hiddenProducts",
    "members": "members",
}


def change_from_form(kind: str, form: Mapping[str, Any], getlist: Callable[[str], list[Any]]
                     ) -> dict[str, Any]:
    """The change a form asks for, in the SubSite's shape (validated by the contract's
    :func:`change_patch`; raises ``ValueError`` with a person's message)."""
    if kind == "payments.methods":
        change: dict[str, Any] = {"methods": [str(m) for m in getlist("methods")]}
    elif kind == "domain":
        change = {"domain": str(form.get("domain", "")).strip().lower()}
    elif kind == "catalog.priceRules":
        rules = []
        for line in str(form.get("price_rules", "")).splitlines():
            if line.strip():
                cat, _, pct = line.partition("=")
                rules.append({"category": cat.strip(), "markupPercent": pct.strip()})
        change = {"priceRules": rules}
    elif kind == "catalog.hiddenProducts":
        change = {"hiddenProducts": [p for p in re.split(r"[,\s]+",
                                                         str(form.get("hidden", ""))) if p]}
    else:
        members = []
        for line in str(form.get("members", "")).splitlines():
            if line.strip():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) != 3:
                    raise ValueError("members: one per line as name,email,role")
                members.append({"name": parts[0], "email": parts[1].lower(), "role": parts[2]})
        change = {"members": members}
    change_patch(kind, change)
    return change


def current_values(site: Any) -> dict[str, str]:
    return {
        "price_rules": "\n".join(f"{r.category}={r.markup_percent}" for r in site.price_rules),
        "hidden": ", ".join(site.hidden_products),
        "members": "\n".join(f"{m.name},{m.email},{m.role}" for m in site.members),
    }


@requires()
async def requests_page(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    try:
        sent = (await state.hq.change_requests()).requests
        hq_error = False
    except HqError:
        sent, hq_error = [], True
    site = state.settings.site
    allowed = {k for k, perm in CHANGE_PERMISSIONS.items() if perm in staff.permissions}
    return render(request, "admin/requests.html", me=staff, sent=sent, hq_error=hq_error,
                  allowed=allowed, approvals=set(site.approvals), values=current_values(site),
                  methods=PAYMENT_METHODS, request_key=secrets.token_urlsafe(16),
                  message=request.query_params.get("msg", ""))


def _submit_for(kind: str) -> Callable[[Request], Awaitable[Response]]:
    @requires(CHANGE_PERMISSIONS[kind])
    async def submit(request: Request, staff: Staff) -> Response:
        form = await request.form()
        if not csrf_ok(request, form):
            return error_page(request, 400, "bad_request")
        try:
            change = change_from_form(kind, form, form.getlist)
            req = ChangeRequest(request_key=str(form.get("request_key", "")), kind=kind,
                                change=change, requested_by=staff.email,
                                note=str(form.get("note", ""))[:1000])
        except ValueError:
            return RedirectResponse("/admin/requests?msg=request_refused", status_code=303)
        try:
            sent = await state_of(request).hq.request_change(req)
        except HqError as exc:
            log.warning("change request not sent", extra={"kind": kind, "status": exc.status,
                                                          "code": exc.code})
            msg = "request_refused" if exc.status == 400 else "hq_unreachable"
            return RedirectResponse(f"/admin/requests?msg={msg}", status_code=303)
        log.info("change requested", extra={"kind": kind, "staff": staff.email,
                                            "request": sent.id, "status": sent.status})
        return RedirectResponse("/admin/requests?msg=request_sent", status_code=303)

    submit.__name__ = f"request_{kind.replace('.', '_')}"
    return submit


# --- money actions above the approval limit ---------------------------------------------

REFUND_ACTION = "orders:refund"


async def hold_refund(state: AppState, order_id: str, by: str) -> bool | None:
    """Hold a refund asked for in the back office when the order's amount is above the
    approval limit: nothing is refunded until HQ approves. True: held (or already held);
    False: below the limit (refund at once); None: no such order."""
    order = await find_order(state, order_id)
    if order is None:
        return None
    amount = int(order["amount_fen"])
    if not state.settings.site.needs_hq_approval(REFUND_ACTION, amount):
        return False
    async with state.pool.connection() as conn:
        # One open hold per order: a second click while it waits is the same request.
        await conn.execute(
            "INSERT INTO refund_holds (order_id, amount_fen, requested_by, approval_key)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (order_id)"
            " WHERE status = 'awaiting_approval' DO NOTHING",
            (order_id, amount, by, secrets.token_urlsafe(24)))
    await sync_money_approvals(state)  # ask HQ now; the loop retries if it cannot
    return True


async def _ask(state: AppState, kind: str, key: str, amount: int, reference: str,
               by: str) -> tuple[str, str] | None:
    """Send (or re-send) a held action's request; HQ's (request id, status), or None
    when HQ cannot be asked now."""
    try:
        view = await state.hq.request_change(ChangeRequest(
            request_key=key, kind=kind, requested_by=by,
            change={"amountFen": amount, "reference": reference}))
    except HqError as exc:
        log.warning("held action not sent to HQ", extra={"kind": kind, "status": exc.status,
                                                         "code": exc.code})
        return None
    return view.id, view.status


async def sync_money_approvals(state: AppState) -> int:
    """Ask HQ about every held action and act on its decision; returns how many were
    decided. Approved ("approved"; "applied" would also count) → made once; rejected →
    dropped. Pending or unreachable → asked again next time."""
    decided = 0
    for w in await held_withdrawals(state):
        got = await _ask(state, WITHDRAW_ACTION, w["approval_key"], w["amount_fen"],
                         f"W{w['id']}", w["requested_by"])
        if got is None or got[1] not in ("approved", "applied", "rejected"):
            continue
        if await release_held_withdrawal(state, w["id"], got[1] != "rejected", got[0]):
            decided += 1
            log.info("held withdrawal decided by HQ",
                     extra={"withdrawal": w["id"], "request": got[0], "status": got[1]})
    async with state.pool.connection() as conn:
        holds = await (await conn.execute(
            "SELECT * FROM refund_holds WHERE status = 'awaiting_approval' ORDER BY id"
        )).fetchall()
    for h in holds:
        got = await _ask(state, REFUND_ACTION, h["approval_key"], h["amount_fen"],
                         h["order_id"], h["requested_by"])
        if got is None or got[1] not in ("approved", "applied", "rejected"):
            continue
        decided += await _refund_decided(state, h, got[0], got[1] != "rejected")
    return decided


async def _refund_decided(state: AppState, hold: dict[str, Any], rid: str,
                          approved: bool) -> int:
    result = ""
    if approved:
        # The order's refund rule decides what happens now (refund before delivery, a
        # dispute after); it is idempotent per order, so a crash between the refund and
        # the update below repeats nothing but the answer.
        result = str(await refund(state, hold["order_id"],
                                  reason=f"staff:{hold['requested_by']} approved:{rid}",
                                  by=hold["requested_by"]))
        if result in ("busy", "refund_pending"):
            return 0  # not made yet: ask again (the approval stands)
    async with state.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE refund_holds SET status = %s, approval_id = %s, result = %s,"
            " decided_at = now() WHERE id = %s AND status = 'awaiting_approval'",
            ("executed" if approved else "rejected", rid[:64], result[:64], hold["id"]))
    log.info("held refund decided by HQ", extra={"order": hold["order_id"], "request": rid,
                                                 "approved": approved, "result": result})
    return cur.rowcount


async def money_approvals_loop(state: AppState) -> None:
    """The shop's background poll (leader only) of its held money actions."""
    while True:
        try:
            await sync_money_approvals(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next round retries; nothing is half-made
            log.warning("held actions not synced", extra={"error": type(exc).__name__})
        await asyncio.sleep(state.settings.approvals_poll_seconds)


def routes() -> list[Route]:
    """Under the shop's ``/admin`` mount."""
    return [Route("/requests", requests_page),
            *(Route(f"/requests/{seg}", _submit_for(kind), methods=["POST"])
              for seg, kind in KIND_OF.items())]
