"""HQ's import path for products and card keys, outside the web UI: what
``kameng storefront hq-import`` runs (the demo stocks HQ with it; an operator of HQ can
script restocking with it). Reads HQ's normal configuration, so it needs exactly the
files/env HQ's pod has, and nothing more.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from kameng.contracts.money import MoneyError, to_fen

from ..config import ConfigError, load_settings
from ..crypto import CryptoError, DataCipher
from ..db import open_pool
from .catalog import ProductInput, save_products
from .inventory import UnknownProduct, import_keys, parse_csv


class ProductIn(BaseModel):
    """One product of the import file (camelCase keys, amounts as decimal strings)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    category: str = Field(min_length=1)
    face_value: str
    cost: str
    name_zh: str = ""
    name_en: str = ""
    region: str = ""

    @field_validator("face_value", "cost", mode="before")
    @classmethod
    def _amount(cls, v: object) -> object:
        # Floats are refused by to_fen below; numbers written as JSON ints are fine.
        return str(v) if isinstance(v, int) else v

    def fen(self) -> tuple[int, int]:
        face, cost = to_fen(self.face_value), to_fen(self.cost)
        if face < 0 or cost < 0:
            raise MoneyError("negative amount")
        return face, cost


def load_products(text: str) -> list[ProductIn]:
    data = json.loads(text)
    return [ProductIn.model_validate(p) for p in data]


def to_inputs(products: list[ProductIn]) -> list[ProductInput]:
    out = []
    for p in products:
        face, cost = p.fen()
        out.append(ProductInput(id=p.id, name_zh=p.name_zh or p.id, name_en=p.name_en or p.id,
                                category=p.category.strip(), region=p.region.strip(),
                                face_value=face, cost=cost))
    return out


async def run_import(products: list[ProductIn], keys_csv: str | None,
                     product: str | None) -> tuple[int, int, int]:
    """(products saved, keys imported, duplicate keys skipped)."""
    settings = load_settings(mode="hq")
    cipher = DataCipher(settings.data_keys)
    rows = parse_csv(keys_csv, product) if keys_csv else []
    # open_pool applies HQ's migrations first, so an import may precede HQ's first start.
    pool = await open_pool(settings.database_url, "hq", min_size=1, max_size=2)
    try:
        saved = await save_products(pool, to_inputs(products))
        imported, dupes = (await import_keys(pool, cipher, settings.hq_master_secret, rows)
                           if rows else (0, 0))
    finally:
        await pool.close()
    return saved, imported, dupes


def main(products_file: str | None, keys_file: str | None, product: str | None) -> int:
    if not products_file and not keys_file:
        print("kameng storefront hq-import: give --products and/or --keys", file=sys.stderr)
        return 2
    try:
        products = load_products(Path(products_file).read_text(encoding="utf-8")) \
            if products_file else []
        keys_csv = Path(keys_file).read_text(encoding="utf-8-sig") if keys_file else None
        saved, imported, dupes = asyncio.run(run_import(products, keys_csv, product))
    except (ConfigError, CryptoError) as exc:
        print(f"kameng storefront hq-import: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # also bad JSON, fields, amounts and CSV rows
        # Messages name files, fields and rows, never a key's value.
        print(f"kameng storefront hq-import: {exc}", file=sys.stderr)
        return 2
    except UnknownProduct as exc:
        print(f"kameng storefront hq-import: unknown product {exc}", file=sys.stderr)
        return 2
    print(f"products saved: {saved}; card keys imported: {imported}, "
          f"duplicates skipped: {dupes}")
    return 0
