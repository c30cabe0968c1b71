"""Sub-site customer pages (work without JavaScript) and the payment notification endpoint."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.events import hash_pii

from .catalog_sync import visible_products
from .orders import OrderRefused, create_order, handle_notification
from .payments import NotificationError
from .web import csrf_ok, error_page, locale_of, render

log = logging.getLogger("kameng.storefront.shop")
_MAX_SESSION_ORDERS = 20


async def index(request: Request) -> Response:
    state = request.app.state
    products = await visible_products(state)
    async with state.pool.connection() as conn:
        news = await (
            await conn.execute("SELECT * FROM announcements ORDER BY id DESC LIMIT 5")
        ).fetchall()
    return render(request, "shop/index.html", products=products, news=news)


async def product_page(request: Request) -> Response:
    products = await visible_products(request.app.state, request.path_params["pid"])
    if not products:
        return error_page(request, 404, "not_found")
    return render(request, "shop/product.html", p=products[0])


async def checkout(request: Request) -> Response:
    state = request.app.state
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    if state.effective_mode() != "normal":
        return error_page(request, 403, "read_only")
    ip = client_ip(request)
    try:
        order = await create_order(
            state, str(form.get("product", "")), str(form.get("contact", "")), ip,
            str(form.get("coupon", "")) or None,
        )
    except OrderRefused as exc:
        status = {"not_found": 404, "forbidden": 403, "unavailable_body": 502}.get(exc.code, 400)
        if exc.code == "out_of_stock":
            status = 409
        return error_page(request, status, exc.code)
    _remember(request, order["id"])
    return RedirectResponse(order["pay_url"], status_code=303)


def _remember(request: Request, order_id: str) -> None:
    mine = [o for o in request.session.get("orders", []) if o != order_id]
    request.session["orders"] = [order_id, *mine][:_MAX_SESSION_ORDERS]


async def order_page(request: Request) -> Response:
    oid = request.path_params["oid"]
    if oid not in request.session.get("orders", []):
        return RedirectResponse(f"/lookup?order={oid}", status_code=303)
    state = request.app.state
    async with state.pool.connection() as conn:
        order = await (await conn.execute("SELECT * FROM orders WHERE id = %s", (oid,))).fetchone()
    if order is None:
        return error_page(request, 404, "not_found")
    key = None
    if order["status"] == "delivered" and order["key_enc"]:
        key = state.cipher.decrypt(order["key_enc"], aad=oid)
    products = await visible_products(state, order["product_id"])
    name = products[0].name(locale_of(request)) if products else order["product_id"]
    return render(request, "shop/order.html", order=order, key=key, product_name=name)


async def lookup_page(request: Request) -> Response:
    return render(request, "shop/lookup.html", order_no=request.query_params.get("order", ""),
                  failed=False)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def lookup_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    throttle = request.app.state.throttle
    key = f"lookup:{client_ip(request)}"
    if throttle.blocked(key):
        return error_page(request, 429, "too_many_attempts")
    oid = str(form.get("order", "")).strip()
    contact_hash = hash_pii(str(form.get("contact", "")), request.app.state.settings.pii_pepper)
    async with request.app.state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id FROM orders WHERE id = %s AND contact_hash = %s", (oid, contact_hash)
            )
        ).fetchone()
    if row is None:
        throttle.failed(key)
        return render(request, "shop/lookup.html", status_code=404, order_no=oid, failed=True)
    _remember(request, oid)
    return RedirectResponse(f"/order/{oid}", status_code=303)


async def payment_notify(request: Request) -> Response:
    state = request.app.state
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        note = state.payments.verify_notification(headers, body)
    except NotificationError as exc:
        state.metrics.notifications.labels("rejected").inc()
        log.warning("payment notification rejected", extra={"reason": str(exc)})
        return JSONResponse({"error": "rejected"}, status_code=401)
    try:
        result = await handle_notification(state, note)
    except ValueError:
        state.metrics.notifications.labels("mismatch").inc()
        return JSONResponse({"error": "mismatch"}, status_code=409)
    state.metrics.notifications.labels(result).inc()
    return JSONResponse({"result": result})


def routes() -> list[Route]:
    return [
        Route("/", index),
        Route("/p/{pid}", product_page),
        Route("/checkout", checkout, methods=["POST"]),
        Route("/order/{oid}", order_page),
        Route("/lookup", lookup_page),
        Route("/lookup", lookup_submit, methods=["POST"]),
        Route("/api/payments/notify", payment_notify, methods=["POST"]),
    ]
