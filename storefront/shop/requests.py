"""Change requests from the partner's back office (``/admin/requests``): the SubSite's
fields belong to HQ, so a change of payment methods, domain, price rules, hidden products
or members is sent to HQ (:data:`kameng.contracts.hq_api.APPROVALS_PATH`) and takes effect
when HQ has applied it to the SubSite — after approval where the site's RolePolicy lists
the kind (``approvals`` of the site config), at once otherwise. Each form carries a random
``request_key``, so a double submit is one request."""

from __future__ import annotations

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

from ..state import state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from .hq_client import HqError

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


def routes() -> list[Route]:
    """Under the shop's ``/admin`` mount."""
    return [Route("/requests", requests_page),
            *(Route(f"/requests/{seg}", _submit_for(kind), methods=["POST"])
              for seg, kind in KIND_OF.items())]
