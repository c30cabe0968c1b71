"""HQ's risk review back office: the queue of held orders, an order's page, and a
reviewer's allow / block / snooze. Thin routes: every rule and every query is in
:mod:`kameng.workers.risk.review`, the one service `kameng risk review` uses too."""

from __future__ import annotations

import logging
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.api.permissions import RISK_REVIEW
from kameng.workers.risk import review as service

from ..state import state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff

log = logging.getLogger("kameng.storefront.hq.review")

# What the age filter offers (value → upper/lower bound); the service parses them.
AGES = ("", "1h", "24h", "7d")
SNOOZE_FOR = ("1d", "7d", "30d")
_SECONDS = {"1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


def _order_url(site: str, order_id: str, msg: str = "") -> str:
    url = f"/admin/review/{quote(site, safe='')}/{quote(order_id, safe='')}"
    return f"{url}?{urlencode({'msg': msg})}" if msg else url


@requires(RISK_REVIEW)
async def queue_page(request: Request, staff: Staff) -> Response:
    q = request.query_params
    age, older = q.get("age", ""), q.get("older", "")
    try:
        f = service.QueueFilter(site=q.get("site", "").strip(), action=q.get("action", ""),
                                newer_than=service.parse_age(age) if age in AGES else None,
                                older_than=service.parse_age(older) if older in AGES
                                else None)
    except service.ReviewError:
        return error_page(request, 400, "bad_request")
    async with state_of(request).pool.connection() as conn:
        rows = await service.queue(conn, f)
    return render(request, "hq/review.html", rows=rows, f=f, age=age, older=older,
                  ages=AGES)


@requires(RISK_REVIEW)
async def order_page(request: Request, staff: Staff) -> Response:
    site, oid = request.path_params["site"], request.path_params["order"]
    async with state_of(request).pool.connection() as conn:
        o = await service.order(conn, oid)
    if o is None or o["site"] != site:
        return error_page(request, 404, "not_found")
    return render(request, "hq/review_order.html", o=o, snooze_for=SNOOZE_FOR,
                  message=request.query_params.get("msg", ""))


@requires(RISK_REVIEW)
async def verdict(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    site, oid = request.path_params["site"], request.path_params["order"]
    state = state_of(request)
    try:
        async with state.pool.connection() as conn:
            res = await service.review(conn, state.redis, site, oid,
                                       str(form.get("action", "")), staff.email,
                                       str(form.get("note", "")))
    except service.ReviewError:
        return error_page(request, 400, "bad_request")
    log.info("risk review", extra={"site": site, "order": oid, "staff": staff.email,
                                   "action": res.record["action"], "first": res.first})
    return RedirectResponse(_order_url(site, oid, "reviewed" if res.first
                                       else "already_reviewed"), status_code=303)


@requires(RISK_REVIEW)
async def snooze(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    site, oid = request.path_params["site"], request.path_params["order"]
    entity, duration = str(form.get("entity", "")), str(form.get("for", ""))
    state = state_of(request)
    async with state.pool.connection() as conn:
        o = await service.order(conn, oid)
        # The snoozed value is the order's own customer or IP (hashed), never a free
        # text: a reviewer snoozes an entity they are looking at.
        value = (o or {}).get(entity) if entity in service.SNOOZE_KEYS else None
        if o is None or o["site"] != site or not value or duration not in _SECONDS:
            return error_page(request, 400, "bad_request")
        try:
            await service.snooze(conn, state.redis, entity, value, _SECONDS[duration],
                                 staff.email, str(form.get("reason", "")))
        except service.ReviewError:
            return error_page(request, 400, "bad_request")
    log.info("risk snooze", extra={"site": site, "order": oid, "staff": staff.email,
                                   "entity": entity, "for": duration})
    return RedirectResponse(_order_url(site, oid, "snoozed"), status_code=303)


def routes() -> list[Route]:
    """Mounted under /admin by :mod:`.pages`."""
    return [
        Route("/review", queue_page),
        Route("/review/{site}/{order}", order_page),
        Route("/review/{site}/{order}", verdict, methods=["POST"]),
        Route("/review/{site}/{order}/snooze", snooze, methods=["POST"]),
    ]
