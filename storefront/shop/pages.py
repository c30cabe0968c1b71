"""Sub-site customer pages (work without JavaScript) and the payment notification endpoint."""

from __future__ import annotations

import logging

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.hq_api import NOTIFY_PATH, NotificationError

from ..state import AppState, state_of
from ..web.page_cache import CachedPage, etag_matches
from ..web.render import csrf_ok, error_page, locale_of, render, render_shared
from ..web.throttle import LOOKUP_PER_CLIENT, LOOKUP_PER_ORDER_CLIENT, client_subject
from .account import ACCOUNT_LOGIN_PATH, current_customer
from .backoffice import latest_announcements
from .catalog import visible_products
from .kpis import count_visit
from .orders import (
    OrderRefused,
    create_order,
    deliver,
    find_order,
    handle_notification,
    lookup_order,
    revealed_key,
)
from .plans import has_feature
from .wallet import WalletRefused, handle_topup_notification, is_topup_id

log = logging.getLogger("kameng.storefront.shop")
_MAX_SESSION_ORDERS = 20
_REFUSAL_STATUS = {"not_found": 404, "forbidden": 403, "unavailable_body": 502, "out_of_stock": 409,
                   "wallet_busy": 409}


def index_key(state: AppState, locale: str) -> tuple[str | None, ...]:
    """The catalogue page's cache key: the license's mode and token are in it, so a
    renewal or suspension shows at once (the one home of the key: the route and
    :mod:`.fast_path` both look pages up by it)."""
    return ("index", locale, state.effective_mode(), state.guard().token)


def index_headers(page: CachedPage, locale: str) -> dict[str, str]:
    """Headers of the catalogue page, 200 and 304 alike (RFC 9110 §15.4.5: a 304 carries
    what a 200 would of ETag, Cache-Control, Vary). The one home of the list: the route and
    :mod:`.fast_path` both send it, and a test holds them equal."""
    # no-cache: browsers keep the page but ask each time, and get a 304 while it holds.
    # nosniff: the body is HTML and nothing else may be guessed from it.
    return {"ETag": page.etag, "Cache-Control": "no-cache", "Vary": "Cookie",
            "Content-Language": locale, "X-Content-Type-Options": "nosniff"}


INDEX_MEDIA_TYPE = "text/html; charset=utf-8"


async def index(request: Request) -> Response:
    """The catalogue, from the page cache: a hit is neither a query nor a render. The page
    is the same for every visitor of a locale (no CSRF token: it has no form). A hit for a
    visitor without a session is answered before the middleware by :mod:`.fast_path`."""
    state = state_of(request)
    await count_visit(state, "index")
    locale = locale_of(request)
    key = index_key(state, locale)
    page = state.pages.get(key)
    if page is None:
        generation = state.pages.counter.value()  # before the reads: see page_cache
        body = render_shared(request, "shop/index.html", locale,
                             products=await visible_products(state),
                             # Announcements are a plan feature (the plan is in the
                             # token, which is in the key).
                             news=await latest_announcements(state)
                             if has_feature(state, "marketing") else [])
        page = state.pages.put(key, generation, body.encode())
    headers = index_headers(page, locale)
    if etag_matches(page.etag, request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(page.body, media_type=INDEX_MEDIA_TYPE, headers=headers)


async def product_page(request: Request) -> Response:
    products = await visible_products(state_of(request), request.path_params["pid"])
    if not products:
        return error_page(request, 404, "not_found")
    # Only a product the shop shows counts, under its category: visitors cannot mint keys.
    await count_visit(state_of(request), "product", products[0].category)
    return render(request, "shop/product.html", p=products[0],
                  customer=await current_customer(request))


async def checkout(request: Request) -> Response:
    state = state_of(request)
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    if state.effective_mode() != "normal":
        return error_page(request, 403, "read_only")
    customer = None
    if form.get("pay_with") == "wallet":
        customer = await current_customer(request)
        if customer is None:
            return RedirectResponse(ACCOUNT_LOGIN_PATH, status_code=303)
    try:
        order = await create_order(
            state, str(form.get("product", "")), str(form.get("contact", "")), client_ip(request),
            str(form.get("coupon", "")) or None, wallet_customer=customer,
            region=str(form.get("region", "")),
        )
    except OrderRefused as exc:
        return error_page(request, _REFUSAL_STATUS.get(exc.code, 400), exc.code)
    except WalletRefused as exc:
        # The order stays unpaid (like an abandoned checkout); the customer sees why.
        return error_page(request, _REFUSAL_STATUS.get(exc.code, 402), exc.code)
    _remember(request, order["id"])
    if customer is not None:
        return RedirectResponse(f"/order/{order['id']}", status_code=303)
    return RedirectResponse(order["pay_url"], status_code=303)


def _remember(request: Request, order_id: str) -> None:
    mine = [o for o in request.session.get("orders", []) if o != order_id]
    request.session["orders"] = [order_id, *mine][:_MAX_SESSION_ORDERS]


async def order_page(request: Request) -> Response:
    oid = request.path_params["oid"]
    if oid not in request.session.get("orders", []):
        return RedirectResponse(f"/lookup?order={oid}", status_code=303)
    state = state_of(request)
    order = await find_order(state, oid)
    if order is None:
        return error_page(request, 404, "not_found")
    products = await visible_products(state, order["product_id"])
    name = products[0].name(locale_of(request)) if products else order["product_id"]
    return render(request, "shop/order.html", order=order, key=revealed_key(state, order),
                  product_name=name)


async def lookup_page(request: Request) -> Response:
    return render(request, "shop/lookup.html", order_no=request.query_params.get("order", ""),
                  failed=False)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def lookup_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    oid = str(form.get("order", "")).strip()
    client = client_subject(client_ip(request))
    checks = ((LOOKUP_PER_ORDER_CLIENT, (oid, client)), (LOOKUP_PER_CLIENT, (client,)))
    if await state.throttle.blocked(state.redis, checks):
        return error_page(request, 429, "too_many_attempts")
    if not await lookup_order(state, oid, str(form.get("contact", ""))):
        await state.throttle.failed(state.redis, checks)
        return render(request, "shop/lookup.html", status_code=404, order_no=oid, failed=True)
    _remember(request, oid)
    return RedirectResponse(f"/order/{oid}", status_code=303)


async def payment_notify(request: Request) -> Response:
    state = state_of(request)
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        note = state.payments.verify_notification(headers, body)
    except NotificationError as exc:
        state.metrics.notifications.labels("rejected").inc()
        log.warning("payment notification rejected", extra={"reason": str(exc)})
        return JSONResponse({"error": "rejected"}, status_code=401)
    try:
        if is_topup_id(note.order_id):
            result = await handle_topup_notification(state, note)
        else:
            result = await handle_notification(state, note)
    except ValueError:
        state.metrics.notifications.labels("mismatch").inc()
        return JSONResponse({"error": "mismatch"}, status_code=409)
    state.metrics.notifications.labels(result).inc()
    # Delivery after the answer (see handle_notification); a held order is not delivered.
    task = BackgroundTask(deliver, state, note.order_id) if result == "paid" and \
        not is_topup_id(note.order_id) else None
    return JSONResponse({"result": result}, background=task)


def routes() -> list[Route]:
    return [
        Route("/", index),
        Route("/p/{pid}", product_page),
        Route("/checkout", checkout, methods=["POST"]),
        Route("/order/{oid}", order_page),
        Route("/lookup", lookup_page),
        Route("/lookup", lookup_submit, methods=["POST"]),
        Route(NOTIFY_PATH, payment_notify, methods=["POST"]),
    ]
