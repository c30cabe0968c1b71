"""Exit test harness (shared with bench/exit_bench.py): fill a site's database the way
its shop would (migrations, customers, staff, coupons, orders with delivered keys
encrypted under the site's data key), fingerprint it, and reach the dev env's S3."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kameng.provision.names import pg_identifier

TABLES = ("customers", "orders", "staff", "coupons")


def site_dsn(admin_dsn: str, site: str) -> str:
    info = conninfo_to_dict(admin_dsn)
    info["dbname"] = pg_identifier(site)
    return make_conninfo(**info)


@dataclass(frozen=True)
class Filled:
    orders: int
    plaintext_keys: dict[str, str]  # order id → the card key delivered (a sample)


async def fill_site(admin_dsn: str, site: str, data_keys: str, orders: int = 200,
                    sample: int = 20) -> Filled:
    """Migrations as the shop applies them, then rows: ``orders`` orders by COPY-speed
    ``generate_series`` (every 4th delivered, its key encrypted like the shop does for the
    first ``sample`` of them; the rest carry ciphertext of a fixed key)."""
    from kameng_storefront.crypto import DataCipher
    from kameng_storefront.db import migrate

    cipher = DataCipher(data_keys)
    async with await psycopg.AsyncConnection.connect(site_dsn(admin_dsn, site)) as conn:
        await migrate(conn, "subsite")
        await conn.execute("INSERT INTO customers (email, password_hash) SELECT 'c' || g || "
                           "'@example.com', 'argon2-hash-' || g FROM generate_series(1, 50) g")
        await conn.execute("INSERT INTO staff (email, name, password_hash) VALUES "
                           "('owner@example.com', 'Owner', 'h'), ('clerk@example.com', 'Clerk', "
                           "NULL)")
        await conn.execute("INSERT INTO coupons (code, percent_off) VALUES ('NEW10', 10), "
                           "('VIP20', 20)")
        filler = cipher.encrypt("FILLER-KEY")
        await conn.execute(
            "INSERT INTO orders (id, product_id, category, unit_cost_fen, price_fen, "
            "amount_fen, contact_enc, contact_hash, status, key_enc, created_at, delivered_at) "
            "SELECT 'o' || lpad(g::text, 7, '0'), 'p' || (g %% 17), 'game-cards', 900, 1000, "
            "1000, %s, md5(g::text), CASE WHEN g %% 4 = 0 THEN 'delivered' ELSE 'paid' END, "
            "CASE WHEN g %% 4 = 0 THEN %s END, "
            "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', "
            "CASE WHEN g %% 4 = 0 THEN timestamptz '2026-01-01 00:00:05+00' "
            "+ g * interval '1 second' END FROM generate_series(1, %s) g",
            (filler, filler, orders))
        keys: dict[str, str] = {}
        for g in range(4, 4 * sample + 1, 4):
            if g > orders:
                break
            oid, plain = f"o{g:07d}", f"CARD-{g:07d}-{os.urandom(4).hex()}"
            keys[oid] = plain
            await conn.execute("UPDATE orders SET key_enc = %s WHERE id = %s",
                               (cipher.encrypt(plain), oid))
        await conn.commit()
    return Filled(orders, keys)


async def fingerprint(admin_dsn: str, site: str) -> dict[str, tuple[int, str]]:
    """table → (rows, md5 of all rows in key order): equal fingerprints, equal data."""
    out: dict[str, tuple[int, str]] = {}
    order = {"customers": "id", "orders": "id", "staff": "email", "coupons": "code"}
    async with await psycopg.AsyncConnection.connect(site_dsn(admin_dsn, site)) as conn:
        await conn.execute("SET TimeZone = 'UTC'")
        for t in TABLES:
            row = await (await conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x.{order[t]})),"
                f" '') FROM {t} x")).fetchone()
            assert row is not None
            out[t] = (int(row[0]), str(row[1]))
    return out


async def delivered_keys(admin_dsn: str, site: str, ids: list[str]) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(site_dsn(admin_dsn, site)) as conn:
        rows = await (await conn.execute("SELECT id, key_enc FROM orders WHERE id = ANY(%s)",
                                         (ids,))).fetchall()
    return {r[0]: r[1] for r in rows}


def s3_settings(prefix: str) -> dict[str, str]:
    """The dev env's S3 server (hack/devenv exports) as a store Secret's values."""
    e = os.environ
    return {"endpoint": e["KAMENG_S3_ENDPOINT"], "bucket": e["KAMENG_S3_BUCKET"],
            "prefix": prefix, "accessKeyId": e["KAMENG_S3_ACCESS_KEY_ID"],
            "secretAccessKey": e["KAMENG_S3_SECRET_ACCESS_KEY"]}


def s3_client() -> Any:
    import boto3
    from botocore.config import Config
    e = os.environ
    return boto3.client("s3", endpoint_url=e["KAMENG_S3_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=e["KAMENG_S3_ACCESS_KEY_ID"],
                        aws_secret_access_key=e["KAMENG_S3_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path"}))


def store_secret(settings: dict[str, str], namespace: str = "kameng-system",
                 name: str = "kameng-export-store") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace}, "stringData": settings}
