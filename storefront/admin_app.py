"""Sub-site back office. Every handler starts with ``require(request, <permission>)``."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.events import OrderEvent, hash_pii
from kameng.contracts.money import MoneyError, to_fen

from .bus import enqueue, flush_outbox
from .catalog_sync import price_of, sync_catalog
from .orders import refund
from .payments import PaymentError
from .staff import Staff, current_staff, login_routes, require, set_password
from .web import csrf_ok, error_page, render

log = logging.getLogger("kameng.storefront.admin")


async def _form(request: Request) -> Any:
    form = await request.form()
    return form if csrf_ok(request, form) else None


def _done(msg: str) -> Response:
    return RedirectResponse(f"/admin?msg={msg}", status_code=303)


def _page(request: Request, staff: Staff, section: str, **ctx: Any) -> Response:
    return render(
        request,
        "admin/page.html",
        me=staff,
        section=section,
        message=request.query_params.get("msg", ""),
        **ctx,
    )


async def dashboard(request: Request) -> Response:
    staff = current_staff(request)
    if staff is None:
        return RedirectResponse("/admin/login", status_code=303)
    return _page(request, staff, "dashboard")


async def products(request: Request) -> Response:
    staff = require(request, "catalog:read")
    if not isinstance(staff, Staff):
        return staff
    state = request.app.state
    async with state.pool.connection() as conn:
        rows = await (await conn.execute("SELECT * FROM products ORDER BY category, id")).fetchall()
        st = await (await conn.execute("SELECT * FROM catalog_state")).fetchone()
    hidden = set(state.settings.site.hidden_products)
    allowed = state.license.allowed_categories()
    items = [
        {
            **r,
            "price": price_of(state, r["category"], r["cost_fen"]),
            "hidden": r["id"] in hidden,
            "licensed": r["category"] in allowed,
        }
        for r in rows
    ]
    return _page(request, staff, "products", items=items, catalog_state=st)


async def catalog_sync(request: Request) -> Response:
    staff = require(request, "catalog:write")
    if not isinstance(staff, Staff):
        return staff
    if await _form(request) is None:
        return error_page(request, 400, "bad_request")
    result = await sync_catalog(request.app.state)
    return _done(f"sync+{result}")


async def orders_list(request: Request) -> Response:
    staff = require(request, "orders:read")
    if not isinstance(staff, Staff):
        return staff
    async with request.app.state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT id, product_id, amount_fen, status, risk_action, created_at FROM orders"
                " ORDER BY created_at DESC LIMIT 200"
            )
        ).fetchall()
    return _page(request, staff, "orders", orders=rows)


async def order_refund(request: Request) -> Response:
    staff = require(request, "orders:refund")
    if not isinstance(staff, Staff):
        return staff
    if await _form(request) is None:
        return error_page(request, 400, "bad_request")
    oid = request.path_params["oid"]
    try:
        result = await refund(request.app.state, oid, reason=f"staff:{staff.email}")
    except PaymentError:
        return error_page(request, 502, "unavailable_body")
    log.info("refund by staff", extra={"order": oid, "staff": staff.email, "result": result})
    return _done(f"refund+{result}")


def _mask(contact: str) -> str:
    return contact[:2] + "***" + contact[-2:] if len(contact) > 4 else "***"


async def customers(request: Request) -> Response:
    staff = require(request, "customers:read")
    if not isinstance(staff, Staff):
        return staff
    state = request.app.state
    async with state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT DISTINCT ON (contact_hash) id, contact_enc, contact_hash,"
                " count(*) OVER (PARTITION BY contact_hash) AS n FROM orders"
                " ORDER BY contact_hash, created_at DESC LIMIT 200"
            )
        ).fetchall()
    people = [
        {"contact": _mask(state.cipher.decrypt(r["contact_enc"], aad=r["id"])), "orders": r["n"]}
        for r in rows
    ]
    return _page(request, staff, "customers", people=people)


async def customer_block(request: Request) -> Response:
    staff = require(request, "customers:manage")
    if not isinstance(staff, Staff):
        return staff
    form = await _form(request)
    if form is None or not str(form.get("contact", "")).strip():
        return error_page(request, 400, "bad_request")
    h = hash_pii(str(form["contact"]), request.app.state.settings.pii_pepper)
    async with request.app.state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO blocked_contacts (contact_hash) VALUES (%s) ON CONFLICT DO NOTHING", (h,)
        )
    return _done("blocked")


async def marketing(request: Request) -> Response:
    staff = require(request, "marketing:manage")
    if not isinstance(staff, Staff):
        return staff
    async with request.app.state.pool.connection() as conn:
        coupons = await (
            await conn.execute("SELECT * FROM coupons ORDER BY created_at DESC")
        ).fetchall()
        news = await (await conn.execute("SELECT * FROM announcements ORDER BY id DESC")).fetchall()
    return _page(request, staff, "marketing", coupons=coupons, news=news)


async def coupon_create(request: Request) -> Response:
    staff = require(request, "marketing:manage")
    if not isinstance(staff, Staff):
        return staff
    form = await _form(request)
    try:
        code = str(form["code"]).strip().upper()  # type: ignore[index]
        pct, max_uses = int(form["percent_off"]), int(form.get("max_uses") or 100)  # type: ignore[index,union-attr]
        if not code or not 1 <= pct <= 90 or max_uses < 1:
            raise ValueError("coupon")
    except (TypeError, KeyError, ValueError):
        return error_page(request, 400, "bad_request")
    async with request.app.state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO coupons (code, percent_off, max_uses) VALUES (%s, %s, %s)"
            " ON CONFLICT (code) DO UPDATE SET percent_off = EXCLUDED.percent_off,"
            " max_uses = EXCLUDED.max_uses, active = true",
            (code, pct, max_uses),
        )
    return _done("coupon+saved")


async def announcement_create(request: Request) -> Response:
    staff = require(request, "marketing:manage")
    if not isinstance(staff, Staff):
        return staff
    form = await _form(request)
    if form is None or not str(form.get("title", "")).strip():
        return error_page(request, 400, "bad_request")
    async with request.app.state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO announcements (title, body) VALUES (%s, %s)",
            (str(form["title"])[:200], str(form.get("body", ""))[:4000]),
        )
    return _done("announcement+saved")


async def balance_fen(conn: Any) -> int:
    """Partner balance: margin of delivered orders minus withdrawals not rejected."""
    row = await (
        await conn.execute(
            "SELECT (SELECT coalesce(sum(amount_fen - unit_cost_fen), 0) FROM orders"
            "        WHERE status = 'delivered')"
            "     - (SELECT coalesce(sum(amount_fen), 0) FROM withdrawals"
            "        WHERE status <> 'rejected') AS balance"
        )
    ).fetchone()
    return int(row["balance"])


async def finance(request: Request) -> Response:
    staff = require(request, "finance:read")
    if not isinstance(staff, Staff):
        return staff
    async with request.app.state.pool.connection() as conn:
        balance = await balance_fen(conn)
        rows = await (await conn.execute("SELECT * FROM withdrawals ORDER BY id DESC")).fetchall()
    return _page(
        request,
        staff,
        "finance",
        balance=balance,
        withdrawals=rows,
        min_withdrawal=request.app.state.settings.min_withdrawal_fen,
    )


async def withdraw(request: Request) -> Response:
    staff = require(request, "finance:withdraw")
    if not isinstance(staff, Staff):
        return staff
    form = await _form(request)
    state = request.app.state
    try:
        amount = to_fen(str(form["amount"]).strip())  # type: ignore[index]
    except (TypeError, KeyError, MoneyError):
        return error_page(request, 400, "bad_request")
    if amount < state.settings.min_withdrawal_fen:
        return _done("withdrawal+below+minimum")
    async with state.pool.connection() as conn, conn.transaction():
        # Serialise withdrawals so two concurrent requests cannot both spend one balance.
        await conn.execute("SELECT pg_advisory_xact_lock(7001)")
        if amount > await balance_fen(conn):
            return _done("withdrawal+exceeds+balance")
        row = await (
            await conn.execute(
                "INSERT INTO withdrawals (amount_fen, requested_by) VALUES (%s, %s) RETURNING id",
                (amount, staff.email),
            )
        ).fetchone()
        await enqueue(
            conn,
            OrderEvent.for_order(
                "withdrawal.requested",
                site=state.settings.site.site,
                order_id=f"W{row['id']}",
                amount=amount,
                customer=hash_pii(staff.email, state.settings.pii_pepper),
            ),
        )
    await flush_outbox(state)
    return _done("withdrawal+requested")


async def reconcile(request: Request) -> Response:
    staff = require(request, "finance:reconcile")
    if not isinstance(staff, Staff):
        return staff
    async with request.app.state.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT id, product_id, status, amount_fen, unit_cost_fen, paid_at, delivered_at,"
                " refunded_at FROM orders WHERE status IN ('delivered', 'refunded') ORDER BY id"
            )
        ).fetchall()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "order",
            "product",
            "status",
            "amount_fen",
            "cost_fen",
            "paid_at",
            "delivered_at",
            "refunded_at",
        ]
    )
    for r in rows:
        w.writerow(
            [
                r["id"],
                r["product_id"],
                r["status"],
                r["amount_fen"],
                r["unit_cost_fen"],
                r["paid_at"],
                r["delivered_at"],
                r["refunded_at"],
            ]
        )
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="reconcile.csv"'},
    )


async def settings_page(request: Request) -> Response:
    staff = require(request, "settings:write")
    if not isinstance(staff, Staff):
        return staff
    async with request.app.state.pool.connection() as conn:
        rows = await (await conn.execute("SELECT key, value FROM settings")).fetchall()
    return _page(request, staff, "settings", values={r["key"]: r["value"] for r in rows})


_SETTING_KEYS = ("support_contact", "notice")


async def settings_save(request: Request) -> Response:
    staff = require(request, "settings:write")
    if not isinstance(staff, Staff):
        return staff
    form = await _form(request)
    if form is None:
        return error_page(request, 400, "bad_request")
    async with request.app.state.pool.connection() as conn:
        for k in _SETTING_KEYS:
            if k in form:
                await conn.execute(
                    "INSERT INTO settings (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (k, str(form[k])[:500]),
                )
    return _done("settings+saved")


async def member_password(request: Request) -> Response:
    staff = require(request, "members:manage")
    if not isinstance(staff, Staff):
        return staff
    form = await _form(request)
    if form is None:
        return error_page(request, 400, "bad_request")
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    if len(password) < 10:
        return _done("password+too+short")
    ok = await set_password(request.app.state, email, password)
    log.info("member password set", extra={"staff": staff.email, "member": email, "ok": ok})
    return _done("password+set" if ok else "unknown+member")


def routes() -> list[Route]:
    return [
        Route("/admin", dashboard),
        Route("/admin/products", products),
        Route("/admin/catalog/sync", catalog_sync, methods=["POST"]),
        Route("/admin/orders", orders_list),
        Route("/admin/orders/{oid}/refund", order_refund, methods=["POST"]),
        Route("/admin/customers", customers),
        Route("/admin/customers/block", customer_block, methods=["POST"]),
        Route("/admin/marketing", marketing),
        Route("/admin/coupons", coupon_create, methods=["POST"]),
        Route("/admin/announcements", announcement_create, methods=["POST"]),
        Route("/admin/finance", finance),
        Route("/admin/withdrawals", withdraw, methods=["POST"]),
        Route("/admin/reconcile", reconcile),
        Route("/admin/settings", settings_page),
        Route("/admin/settings", settings_save, methods=["POST"]),
        Route("/admin/members/password", member_password, methods=["POST"]),
        *login_routes(),
    ]
