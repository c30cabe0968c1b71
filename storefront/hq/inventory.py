"""HQ card-key inventory: CSV import (encrypted at rest) and atomic allocation."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Callable
from typing import Any

from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from ..crypto import DataCipher


class OutOfStock(Exception):
    """No available key for the product."""


class UnknownProduct(Exception):
    """The product does not exist."""


def key_fingerprint(master_secret: str, product_id: str, secret: str) -> str:
    """Keyed hash of a card key: finds duplicate imports without storing plaintext."""
    msg = f"{product_id}\x00{secret}".encode()
    return hmac.new(master_secret.encode(), msg, hashlib.sha256).hexdigest()


def parse_csv(text: str, default_product: str | None) -> list[tuple[str, str]]:
    """Rows ``product_id,secret`` or just ``secret`` (then ``default_product``)."""
    rows: list[tuple[str, str]] = []
    for row in csv.reader(io.StringIO(text)):
        cells = [c.strip() for c in row if c.strip()]
        if not cells or cells[0].lower() in {"product_id", "product", "secret", "key"}:
            continue
        if len(cells) >= 2:
            rows.append((cells[0], cells[1]))
        elif default_product:
            rows.append((default_product, cells[0]))
        else:
            raise ValueError("a row has no product id and no product was chosen")
    return rows


async def import_keys(
    pool: AsyncConnectionPool, cipher: DataCipher, master_secret: str, rows: list[tuple[str, str]]
) -> tuple[int, int]:
    """Insert keys encrypted; returns (imported, duplicates). All-or-nothing per call."""
    imported = dupes = 0
    async with pool.connection() as conn, conn.transaction():
        products = {
            r["id"] for r in await (await conn.execute("SELECT id FROM products")).fetchall()
        }
        for product_id, secret in rows:
            if product_id not in products:
                raise UnknownProduct(product_id)
            cur = await conn.execute(
                "INSERT INTO card_keys (product_id, secret_enc, secret_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (secret_hash) DO NOTHING",
                (
                    product_id,
                    cipher.encrypt(secret, aad=product_id),
                    key_fingerprint(master_secret, product_id, secret),
                ),
            )
            if cur.rowcount:
                imported += 1
            else:
                dupes += 1
        await conn.execute(
            "UPDATE products SET updated_at = now() WHERE id = ANY(%s)",
            (list({p for p, _ in rows}),),
        )
    return imported, dupes


# One statement: pick the oldest available key, skipping rows other transactions hold,
# and mark it sold. Two concurrent calls can never receive the same row.
_ALLOCATE = """
UPDATE card_keys k SET status = 'sold', site = %(site)s, order_ref = %(order)s, sold_at = now()
FROM (
    SELECT id FROM card_keys
    WHERE product_id = %(product)s AND status = 'available'
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
) pick
WHERE k.id = pick.id AND k.status = 'available'  -- re-checked after any lock wait
RETURNING k.id, k.product_id, k.secret_enc
"""

_PAYMENT = "SELECT * FROM payments WHERE site = %s AND order_id = %s FOR SHARE"
_PRODUCT = "SELECT id, category, region, active, cost_fen FROM products WHERE id = %s"
_EXISTING = (
    "SELECT id, product_id, secret_enc FROM card_keys"
    " WHERE site = %s AND order_ref = %s AND status = 'sold'"
)


async def allocate_key(
    pool: AsyncConnectionPool, cipher: DataCipher, site: str, order_id: str, product_id: str,
    check: Callable[[dict[str, Any] | None, dict[str, Any] | None], None],
) -> tuple[int, str]:
    """Exactly one key for ``(site, order_id)``: a retry returns the key already sold.

    ``check(product, payment)`` sees the product row and HQ's payment of the order (each
    None when missing) and raises to refuse; it runs in the allocation's transaction with
    the payment row share-locked, so the payment cannot change (be refunded) between the
    check and the allocation.
    """
    async with pool.connection() as conn, conn.transaction():
        # Pipelined: the three reads leave together, one round trip instead of three
        # (the payment's share lock is taken all the same, before anything is decided).
        async with conn.pipeline():
            payment_cur = await conn.execute(_PAYMENT, (site, order_id))
            product_cur = await conn.execute(_PRODUCT, (product_id,))
            existing_cur = await conn.execute(_EXISTING, (site, order_id))
        payment, product = await payment_cur.fetchone(), await product_cur.fetchone()
        check(product, payment)
        row = await existing_cur.fetchone()
        if row is None:
            try:
                async with conn.transaction():  # a savepoint: the unique index may refuse
                    row = await (
                        await conn.execute(
                            _ALLOCATE, {"site": site, "order": order_id, "product": product_id}
                        )
                    ).fetchone()
            except errors.UniqueViolation:
                # A concurrent retry of the same order won; its key is the order's key.
                row = await (await conn.execute(_EXISTING, (site, order_id))).fetchone()
            if row is None:
                raise OutOfStock(product_id)
    return row["id"], cipher.decrypt(row["secret_enc"], aad=row["product_id"])
