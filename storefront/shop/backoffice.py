"""The back office's data: what the staff pages show and change (one function per job)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kameng.contracts.events import hash_pii

from ..state import AppState
from .catalog import price_of

Row = dict[str, Any]
SETTING_KEYS = ("support_contact", "notice")
RECONCILE_COLUMNS = (
    "order", "product", "status", "amount_fen", "cost_fen", "paid_at", "delivered_at",
    "refunded_at",
)


async def _all(state: AppState, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    async with state.pool.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]


async def products_overview(state: AppState) -> tuple[list[Row], Row | None]:
    """Every synced product with its price and flags, and the catalogue's sync state."""
    rows = await _all(state, "SELECT * FROM products ORDER BY category, id")
    sync_state = next(iter(await _all(state, "SELECT * FROM catalog_state")), None)
    site = state.settings.site
    hidden = set(site.hidden_products)
    allowed = state.guard().allowed_categories()
    items = [
        {
            **r,
            "price": price_of(site, r["category"], r["cost_fen"]),
            "hidden": r["id"] in hidden,
            "licensed": r["category"] in allowed,
        }
        for r in rows
    ]
    return items, sync_state


async def recent_orders(state: AppState) -> list[Row]:
    return await _all(
        state,
        "SELECT o.id, o.product_id, o.amount_fen, o.status, o.risk_action, o.created_at,"
        " o.last_error, d.status AS dispute FROM orders o"
        " LEFT JOIN order_disputes d ON d.order_id = o.id"
        " ORDER BY o.created_at DESC LIMIT 200",
    )


def mask_contact(contact: str) -> str:
    return contact[:2] + "***" + contact[-2:] if len(contact) > 4 else "***"


async def customers(state: AppState) -> list[dict[str, Any]]:
    """One row per customer (masked contact, order count), most recent first."""
    rows = await _all(
        state,
        "SELECT DISTINCT ON (contact_hash) id, contact_enc, contact_hash,"
        " count(*) OVER (PARTITION BY contact_hash) AS n FROM orders"
        " ORDER BY contact_hash, created_at DESC LIMIT 200",
    )
    return [
        {"contact": mask_contact(state.cipher.decrypt(r["contact_enc"], aad=r["id"])),
         "orders": r["n"]}
        for r in rows
    ]


async def block_contact(state: AppState, contact: str) -> None:
    h = hash_pii(contact, state.settings.pii_pepper)
    async with state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO blocked_contacts (contact_hash) VALUES (%s) ON CONFLICT DO NOTHING", (h,)
        )


async def latest_announcements(state: AppState, limit: int = 5) -> list[Row]:
    return await _all(state, "SELECT * FROM announcements ORDER BY id DESC LIMIT %s", (limit,))


async def marketing(state: AppState) -> tuple[list[Row], list[Row]]:
    coupons = await _all(state, "SELECT * FROM coupons ORDER BY created_at DESC")
    news = await _all(state, "SELECT * FROM announcements ORDER BY id DESC")
    return coupons, news


@dataclass(frozen=True)
class Coupon:
    code: str
    percent_off: int
    max_uses: int


def coupon_from_form(form: Mapping[str, Any]) -> Coupon:
    """Validate the coupon form. Raises ``KeyError``/``ValueError``/``TypeError``."""
    code = str(form["code"]).strip().upper()
    pct, max_uses = int(form["percent_off"]), int(form.get("max_uses") or 100)
    if not code or not 1 <= pct <= 90 or max_uses < 1:
        raise ValueError("coupon")
    return Coupon(code, pct, max_uses)


async def save_coupon(state: AppState, c: Coupon) -> None:
    async with state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO coupons (code, percent_off, max_uses) VALUES (%s, %s, %s)"
            " ON CONFLICT (code) DO UPDATE SET percent_off = EXCLUDED.percent_off,"
            " max_uses = EXCLUDED.max_uses, active = true",
            (c.code, c.percent_off, c.max_uses),
        )


async def add_announcement(state: AppState, title: str, body: str) -> None:
    async with state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO announcements (title, body) VALUES (%s, %s)", (title[:200], body[:4000])
        )
    state.pages.invalidate()  # the catalogue page shows the latest announcements


async def settings_values(state: AppState) -> dict[str, str]:
    return {r["key"]: r["value"] for r in await _all(state, "SELECT key, value FROM settings")}


async def save_settings(state: AppState, form: Mapping[str, Any]) -> None:
    """Store the editable keys present in ``form`` (values cut at 500 characters)."""
    async with state.pool.connection() as conn:
        for k in SETTING_KEYS:
            if k in form:
                await conn.execute(
                    "INSERT INTO settings (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (k, str(form[k])[:500]),
                )


def reconcile_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(RECONCILE_COLUMNS)
    for r in rows:
        w.writerow([r["id"], r["product_id"], r["status"], r["amount_fen"], r["unit_cost_fen"],
                    r["paid_at"], r["delivered_at"], r["refunded_at"]])
    return buf.getvalue()


async def reconcile_rows(state: AppState) -> list[Row]:
    return await _all(
        state,
        "SELECT id, product_id, status, amount_fen, unit_cost_fen, paid_at, delivered_at,"
        " refunded_at FROM orders WHERE status IN ('delivered', 'refunded') ORDER BY id",
    )
