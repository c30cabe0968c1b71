"""HQ's master catalogue: the products with their stock, and changes to it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from kameng.contracts.hq_api import CATALOG_CHANNEL, Catalog, CatalogProduct
from kameng.contracts.money import to_fen

from ..state import AppState

log = logging.getLogger("kameng.storefront.hq")


async def load_catalog(pool: AsyncConnectionPool) -> Catalog:
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
    return Catalog(
        products=[
            CatalogProduct(
                id=r["id"], name_zh=r["name_zh"], name_en=r["name_en"], category=r["category"],
                region=r["region"], face_value=r["face_value_fen"], cost=r["cost_fen"],
                stock=int(r["stock"]), active=r["active"],
            )
            for r in rows
        ]
    )


@dataclass(frozen=True)
class ProductInput:
    id: str
    name_zh: str
    name_en: str
    category: str
    region: str
    face_value: int
    cost: int


def product_from_form(form: Mapping[str, Any]) -> ProductInput:
    """Validate the admin's product form. Raises ``KeyError``/``ValueError``/``MoneyError``."""
    pid = str(form["id"]).strip()
    face, cost = to_fen(str(form["face_value"])), to_fen(str(form["cost"]))
    category = str(form["category"]).strip()
    if not pid or not category or cost < 0 or face < 0:
        raise ValueError("product")
    return ProductInput(
        id=pid, name_zh=str(form.get("name_zh", pid)), name_en=str(form.get("name_en", pid)),
        category=category, region=str(form.get("region", "")).strip(), face_value=face,
        cost=cost,
    )


_UPSERT = (
    "INSERT INTO products (id, name_zh, name_en, category, region, face_value_fen, cost_fen)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
    " name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,"
    " category = EXCLUDED.category, region = EXCLUDED.region,"
    " face_value_fen = EXCLUDED.face_value_fen, cost_fen = EXCLUDED.cost_fen,"
    " updated_at = now()"
)


async def save_products(pool: AsyncConnectionPool, products: Sequence[ProductInput]) -> int:
    """Insert or update products in one transaction (the back office's form and
    ``kameng storefront hq-import`` both land here)."""
    async with pool.connection() as conn, conn.transaction():
        for p in products:
            await conn.execute(_UPSERT, (p.id, p.name_zh, p.name_en, p.category, p.region,
                                         p.face_value, p.cost))
    return len(products)


async def save_product(pool: AsyncConnectionPool, p: ProductInput) -> None:
    await save_products(pool, [p])


async def catalog_changed(state: AppState) -> None:
    """Tell sub-sites to re-sync now (they also poll, so a lost message only delays)."""
    try:
        await state.redis.publish(CATALOG_CHANNEL, "changed")
    except Exception:  # the poll will catch up
        log.warning("catalog change notification failed")
