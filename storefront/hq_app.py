"""HQ mode: master catalogue, inventory admin, catalogue + fulfilment APIs, sandbox payments."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.hq_auth import verify_site_api_token
from kameng.contracts.license_token import TokenError, evaluate_mode, verify_token
from kameng.contracts.money import MoneyError, to_fen

from .hq_inventory import OutOfStock, UnknownProduct, allocate_key, import_keys, parse_csv
from .payments import sign_notification
from .staff import current_staff, login_routes
from .sweeps import sweep_forever
from .web import csrf_ok, error_page, render

log = logging.getLogger("kameng.storefront.hq")


# --- per-site authentication and license scope ------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


def _api_error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.code}, status_code=exc.status)


def authenticate_site(request: Request) -> str:
    site = request.headers.get("x-kameng-site", "")
    auth = request.headers.get("authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    master = request.app.state.settings.hq_master_secret
    if not site or not verify_site_api_token(master, site, token):
        log.warning("site authentication failed", extra={"site": site[:63]})
        raise ApiError(401, "unauthenticated")
    return site


async def check_license(request: Request, site: str, allow_read_only: bool) -> Any:
    """Verify the sub-site's license token (header ``X-Kameng-License``) for ``site``."""
    try:
        claims = verify_token(
            request.headers.get("x-kameng-license"), request.app.state.license_keys
        )
    except TokenError as exc:
        log.warning("license refused", extra={"site": site, "reason": str(exc)})
        raise ApiError(403, "license_invalid") from exc
    if claims.site != site:
        raise ApiError(403, "license_wrong_site")
    mode = evaluate_mode(claims)
    if mode == "suspended" or (mode == "readOnly" and not allow_read_only):
        raise ApiError(403, f"license_{mode}")
    # Write only when the sequence grows: the common case is a read, so concurrent
    # fulfilments of one site do not queue on this row's lock.
    async with request.app.state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO site_license_seq (site, seq) VALUES (%s, %s)"
                " ON CONFLICT (site) DO UPDATE SET seq = EXCLUDED.seq"
                " WHERE site_license_seq.seq < EXCLUDED.seq RETURNING seq",
                (site, claims.seq),
            )
        ).fetchone()
        if row is None:
            row = await (
                await conn.execute("SELECT seq FROM site_license_seq WHERE site = %s", (site,))
            ).fetchone()
    if row["seq"] > claims.seq:
        raise ApiError(403, "license_superseded")
    return claims


# --- catalogue ---------------------------------------------------------------------------


async def catalog_document(pool: Any) -> tuple[bytes, str]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT p.id, p.name_zh, p.name_en, p.category, p.region, p.face_value_fen,"
                " p.cost_fen, p.active, count(k.id) AS stock"
                " FROM products p LEFT JOIN card_keys k"
                "   ON k.product_id = p.id AND k.status = 'available'"
                " GROUP BY p.id ORDER BY p.category, p.id"
            )
        ).fetchall()
    products = [
        {
            "id": r["id"],
            "nameZh": r["name_zh"],
            "nameEn": r["name_en"],
            "category": r["category"],
            "region": r["region"],
            "faceValue": r["face_value_fen"],
            "cost": r["cost_fen"],
            "stock": int(r["stock"]),
            "active": r["active"],
        }
        for r in rows
    ]
    body = json.dumps({"products": products}, separators=(",", ":"), ensure_ascii=False).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def api_catalog(request: Request) -> Response:
    try:
        authenticate_site(request)
    except ApiError as exc:
        return _api_error(exc)
    body, etag = await catalog_document(request.app.state.pool)
    inm = request.headers.get("if-none-match", "")
    if etag in [t.strip().removeprefix("W/") for t in inm.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


# --- fulfilment --------------------------------------------------------------------------


async def api_fulfil(request: Request) -> Response:
    state = request.app.state
    try:
        site = authenticate_site(request)
        # Paid orders of a site in grace still get their key: the customer already paid.
        claims = await check_license(request, site, allow_read_only=True)
        data = await request.json()
        order_id, product_id = str(data["order_id"]), str(data["product_id"])
        async with state.pool.connection() as conn:
            product = await (
                await conn.execute(
                    "SELECT category, region, active FROM products WHERE id = %s", (product_id,)
                )
            ).fetchone()
        if product is None:
            raise ApiError(404, "unknown_product")
        if not claims.allows(product["category"], product["region"]):
            log.warning(
                "fulfilment outside license scope",
                extra={"site": site, "product": product_id, "category": product["category"]},
            )
            raise ApiError(403, "out_of_license_scope")
        key_id, secret = await allocate_key(state.pool, state.cipher, site, order_id, product_id)
    except ApiError as exc:
        return _api_error(exc)
    except (KeyError, ValueError):
        return JSONResponse({"error": "bad_request"}, status_code=400)
    except OutOfStock:
        return JSONResponse({"error": "out_of_stock"}, status_code=409)
    state.metrics.keys_allocated.inc()
    log.info("key allocated", extra={"site": site, "order": order_id, "key_id": key_id})
    return JSONResponse({"order_id": order_id, "key_id": key_id, "secret": secret})


# --- sandbox payment channel ---------------------------------------------------------------


async def api_create_payment(request: Request) -> Response:
    state = request.app.state
    try:
        site = authenticate_site(request)
        await check_license(request, site, allow_read_only=False)
        data = await request.json()
        order_id, amount = str(data["order_id"]), int(data["amount"])
        notify_url, return_url = str(data["notify_url"]), str(data["return_url"])
        if amount <= 0:
            raise ValueError("amount")
    except ApiError as exc:
        return _api_error(exc)
    except (KeyError, ValueError, TypeError):
        return JSONResponse({"error": "bad_request"}, status_code=400)
    pid = "P" + secrets.token_hex(10)
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO payments (id, site, order_id, amount_fen, currency, notify_url,"
                " return_url) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (site, order_id) DO UPDATE SET site = EXCLUDED.site"
                " RETURNING id, amount_fen",
                (pid, site, order_id, amount, data.get("currency", "CNY"), notify_url, return_url),
            )
        ).fetchone()
    if row["amount_fen"] != amount:
        return JSONResponse({"error": "amount_mismatch"}, status_code=409)
    return JSONResponse(
        {"payment_id": row["id"], "pay_url": f"{state.settings.public_url}/pay/{row['id']}"}
    )


async def api_refund(request: Request) -> Response:
    try:
        site = authenticate_site(request)
    except ApiError as exc:
        return _api_error(exc)
    async with request.app.state.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE payments SET status = 'refunded' WHERE id = %s AND site = %s"
            " AND status IN ('paid', 'refunded')",
            (request.path_params["pid"], site),
        )
    if not cur.rowcount:
        return JSONResponse({"error": "not_refundable"}, status_code=409)
    return JSONResponse({"status": "refunded"})


async def _get_payment(request: Request) -> dict[str, Any] | None:
    async with request.app.state.pool.connection() as conn:
        return await (
            await conn.execute(
                "SELECT * FROM payments WHERE id = %s", (request.path_params["pid"],)
            )
        ).fetchone()


async def pay_page(request: Request) -> Response:
    payment = await _get_payment(request)
    if payment is None:
        return error_page(request, 404, "not_found")
    return render(request, "hq/pay.html", payment=payment)


async def pay_confirm(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    pid = request.path_params["pid"]
    async with request.app.state.pool.connection() as conn:
        row = await (
            await conn.execute(
                "UPDATE payments SET status = 'paid', paid_at = now()"
                " WHERE id = %s AND status = 'created' RETURNING *",
                (pid,),
            )
        ).fetchone()
        if row is None:
            row = await (
                await conn.execute("SELECT * FROM payments WHERE id = %s", (pid,))
            ).fetchone()
    if row is None:
        return error_page(request, 404, "not_found")
    task = (
        BackgroundTask(notify_payment, request.app.state, row) if row["status"] == "paid" else None
    )
    return RedirectResponse(row["return_url"], status_code=303, background=task)


def notification_body(payment: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "notification_id": f"{payment['id']}:paid",
            "payment_id": payment["id"],
            "site": payment["site"],
            "order_id": payment["order_id"],
            "amount": payment["amount_fen"],
            "currency": payment["currency"],
            "status": "paid",
        },
        separators=(",", ":"),
    ).encode()


async def notify_payment(state: Any, payment: dict[str, Any], attempts: int = 3) -> bool:
    """POST the signed notification; retried here and later by the sweeper until 2xx."""
    secret = _site_token(state, payment["site"])
    body = notification_body(payment)
    for attempt in range(attempts):
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "x-kameng-timestamp": str(ts),
            "x-kameng-signature": sign_notification(secret, ts, body),
        }
        try:
            r = await state.http.post(
                payment["notify_url"], content=body, headers=headers, timeout=30
            )
            if 200 <= r.status_code < 300:
                async with state.pool.connection() as conn:
                    await conn.execute(
                        "UPDATE payments SET notified_at = now() WHERE id = %s", (payment["id"],)
                    )
                return True
            log.warning(
                "notification refused", extra={"payment": payment["id"], "status": r.status_code}
            )
        except Exception as exc:  # any transport error means "retry later"
            log.warning(
                "notification failed", extra={"payment": payment["id"], "error": type(exc).__name__}
            )
        await asyncio.sleep(0.5 * (attempt + 1))
    return False


def _site_token(state: Any, site: str) -> str:
    from kameng.contracts.hq_auth import derive_site_api_token

    return derive_site_api_token(state.settings.hq_master_secret, site)


async def notification_sweeper(state: Any, interval: float = 5.0) -> None:
    """Re-send notifications of paid payments whose notification never got a 2xx."""
    await sweep_forever(
        state, interval,
        "SELECT * FROM payments WHERE status = 'paid' AND notified_at IS NULL"
        " AND paid_at < now() - interval '10 seconds' LIMIT 50",
        lambda st, row: notify_payment(st, row, attempts=1), "notification")


# --- pages and admin -----------------------------------------------------------------------


async def home(request: Request) -> Response:
    body, _ = await catalog_document(request.app.state.pool)
    return render(request, "hq/index.html", products=json.loads(body)["products"])


async def admin_home(request: Request) -> Response:
    if current_staff(request) is None:
        return RedirectResponse("/admin/login", status_code=303)
    body, _ = await catalog_document(request.app.state.pool)
    return render(
        request,
        "hq/admin.html",
        products=json.loads(body)["products"],
        message=request.query_params.get("msg", ""),
    )


async def admin_product(request: Request) -> Response:
    if current_staff(request) is None:
        return RedirectResponse("/admin/login", status_code=303)
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    try:
        pid = str(form["id"]).strip()
        face, cost = to_fen(str(form["face_value"])), to_fen(str(form["cost"]))
        if not pid or not str(form["category"]).strip() or cost < 0 or face < 0:
            raise ValueError("product")
    except (KeyError, ValueError, MoneyError):
        return error_page(request, 400, "bad_request")
    async with request.app.state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO products"
            " (id, name_zh, name_en, category, region, face_value_fen, cost_fen)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
            " name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,"
            " category = EXCLUDED.category, region = EXCLUDED.region,"
            " face_value_fen = EXCLUDED.face_value_fen, cost_fen = EXCLUDED.cost_fen,"
            " updated_at = now()",
            (
                pid,
                str(form.get("name_zh", pid)),
                str(form.get("name_en", pid)),
                str(form["category"]).strip(),
                str(form.get("region", "")).strip(),
                face,
                cost,
            ),
        )
    await _catalog_changed(request.app.state)
    return RedirectResponse("/admin?msg=saved", status_code=303)


async def admin_import(request: Request) -> Response:
    if current_staff(request) is None:
        return RedirectResponse("/admin/login", status_code=303)
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    upload = form.get("file")
    text = ""
    if upload is not None and hasattr(upload, "read"):
        text = (await upload.read()).decode("utf-8-sig")
    text = text or str(form.get("csv", ""))
    state = request.app.state
    try:
        rows = parse_csv(text, str(form.get("product", "")) or None)
        imported, dupes = await import_keys(
            state.pool, state.cipher, state.settings.hq_master_secret, rows
        )
    except (ValueError, UnknownProduct):
        return error_page(request, 400, "bad_request")
    log.info("card keys imported", extra={"imported": imported, "duplicates": dupes})
    await _catalog_changed(state)
    return RedirectResponse(f"/admin?msg=imported+{imported}+duplicates+{dupes}", status_code=303)


async def _catalog_changed(state: Any) -> None:
    """Tell sub-sites to re-sync now (they also poll, so a lost message only delays)."""
    try:
        await state.redis.publish("kameng:catalog", "changed")
    except Exception:  # the poll will catch up
        log.warning("catalog change notification failed")


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/api/v1/catalog", api_catalog),
        Route("/api/v1/fulfil", api_fulfil, methods=["POST"]),
        Route("/api/v1/payments", api_create_payment, methods=["POST"]),
        Route("/api/v1/payments/{pid}/refund", api_refund, methods=["POST"]),
        Route("/pay/{pid}", pay_page),
        Route("/pay/{pid}", pay_confirm, methods=["POST"]),
        Route("/admin", admin_home),
        Route("/admin/products", admin_product, methods=["POST"]),
        Route("/admin/keys", admin_import, methods=["POST"]),
        *login_routes(),
    ]
