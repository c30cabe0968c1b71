"""Sub-site catalogue: synced from HQ by conditional GET, priced by the site's rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from kameng.contracts.hq_api import CATALOG_CHANNEL
from kameng.contracts.money import apply_markup
from kameng.contracts.siteconfig import SiteConfig

from ..state import AppState
from .hq_client import HqError

log = logging.getLogger("kameng.storefront.catalog")


@dataclass(frozen=True)
class ShopProduct:
    id: str
    name_zh: str
    name_en: str
    category: str
    region: str
    face_value: int
    cost: int
    price: int
    stock: int

    def name(self, locale: str) -> str:
        return self.name_zh if locale == "zh-CN" else self.name_en


# What the cached pages were built from, as the database has it: the catalogue's ETag (a
# sync by any replica changes it) and the newest announcement.
_SEEN = ("SELECT (SELECT etag FROM catalog_state WHERE id = 1) AS etag,"
         " (SELECT max(id) FROM announcements) AS news")


async def sync_catalog(state: AppState) -> str:
    """One conditional GET. Returns ``"changed"``, ``"unchanged"`` or ``"failed"``.

    Each round also notices what another replica changed in the shared database (a sync
    of its own, an announcement) and drops this pod's cached pages then."""
    async with state.pool.connection() as conn:
        row = await (await conn.execute(_SEEN)).fetchone()
    state.pages.observe((row["etag"], row["news"]))
    try:
        fetched = await state.hq.catalog(row["etag"])
    except HqError as exc:
        if exc.status is None:
            log.warning("catalog sync failed", extra={"error": str(exc)})
        else:
            log.warning("catalog sync refused", extra={"status": exc.status})
        state.metrics.catalog_syncs.labels("failed").inc()
        return "failed"
    if fetched.catalog is None:
        async with state.pool.connection() as conn:
            await conn.execute("UPDATE catalog_state SET synced_at = now() WHERE id = 1")
        state.metrics.catalog_syncs.labels("unchanged").inc()
        return "unchanged"
    products = fetched.catalog.products
    async with state.pool.connection() as conn, conn.transaction():
        await conn.execute("UPDATE products SET active = false")
        for p in products:
            await conn.execute(
                "INSERT INTO products (id, name_zh, name_en, category, region, face_value_fen,"
                " cost_fen, stock, active, synced_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s, now())"
                " ON CONFLICT (id) DO UPDATE SET name_zh = EXCLUDED.name_zh,"
                " name_en = EXCLUDED.name_en, category = EXCLUDED.category,"
                " region = EXCLUDED.region, face_value_fen = EXCLUDED.face_value_fen,"
                " cost_fen = EXCLUDED.cost_fen, stock = EXCLUDED.stock,"
                " active = EXCLUDED.active, synced_at = now()",
                (p.id, p.name_zh, p.name_en, p.category, p.region, p.face_value, p.cost, p.stock,
                 p.active),
            )
        await conn.execute(
            "INSERT INTO catalog_state (id, etag, synced_at) VALUES (1, %s, now())"
            " ON CONFLICT (id) DO UPDATE SET etag = EXCLUDED.etag, synced_at = now()",
            (fetched.etag,),
        )
    state.pages.invalidate()  # after the commit: see web.page_cache
    state.pages.observe((fetched.etag, row["news"]))
    state.metrics.catalog_syncs.labels("changed").inc()
    log.info("catalog synced", extra={"products": len(products)})
    return "changed"


async def sync_loop(state: AppState) -> None:
    """Poll every ``catalog_sync_seconds``; HQ's catalogue message syncs at once."""
    wake = asyncio.Event()

    async def listen() -> None:
        while True:
            try:
                pubsub = state.redis.pubsub()
                await pubsub.subscribe(CATALOG_CHANNEL)
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # polling still works without the push
                if "NOPERM" in str(exc):  # the site's ACL user has no pub/sub: poll only
                    return
                await asyncio.sleep(5)

    listener = asyncio.create_task(listen())
    try:
        while True:
            result = await sync_catalog(state)
            interval = state.settings.catalog_sync_seconds
            if result == "failed":  # e.g. HQ still starting: retry soon, not a full period
                interval = min(interval, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
            wake.clear()
    finally:
        listener.cancel()


def price_of(site: SiteConfig, category: str, cost: int) -> int:
    """Sale price: the category's markup on HQ cost, never below cost."""
    return apply_markup(cost, site.markup_for(category))


async def visible_products(state: AppState, product_id: str | None = None) -> list[ShopProduct]:
    """Products this shop may sell: active, licensed category and region, not hidden."""
    guard = state.guard()
    site = state.settings.site
    hidden = set(site.hidden_products)
    sql = "SELECT * FROM products WHERE active AND category = ANY(%s)"
    params: list[Any] = [sorted(guard.allowed_categories())]
    if product_id is not None:
        sql += " AND id = %s"
        params.append(product_id)
    async with state.pool.connection() as conn:
        rows = await (await conn.execute(sql + " ORDER BY category, id", params)).fetchall()
    return [
        ShopProduct(
            id=r["id"], name_zh=r["name_zh"], name_en=r["name_en"], category=r["category"],
            region=r["region"], face_value=r["face_value_fen"], cost=r["cost_fen"],
            price=price_of(site, r["category"], r["cost_fen"]), stock=r["stock"],
        )
        for r in rows
        if r["id"] not in hidden and guard.allows_region(r["region"])
    ]
