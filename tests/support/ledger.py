"""Settlement test harness (shared with bench/settlement_bench.py): a ledger database with
HQ's schema, License objects, events into a site stream, and a worker to drain them."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from kameng.contracts.events import OrderEvent

ROOT = Path(__file__).resolve().parents[2]


async def setup_ledger(dsn: str) -> None:
    from kameng.ledger.repo import migrate
    from kameng.payouts import SandboxPayoutProvider
    from kameng_storefront.db import migrate as storefront_migrate

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await storefront_migrate(conn, "hq")
        await migrate(conn)
        await SandboxPayoutProvider.setup(conn)


def license_obj(site: str, *, shares: dict[str, str] | None = None, fee: str = "12000.00",
                period: str = "Monthly", suspended: bool = False) -> dict[str, Any]:
    lic = copy.deepcopy(yaml.safe_load((ROOT / "manifests/samples/license-demo.yaml")
                                       .read_text()))
    lic["metadata"] = {"name": site, "generation": 1}
    lic["spec"]["subSite"] = site
    shares = shares if shares is not None else {"game-cards": "8", "mobile-topup": "2.5"}
    lic["spec"]["categories"] = sorted(shares) or ["game-cards"]
    lic["spec"]["fees"] = {"currency": "CNY", "baseAnnualFee": fee, "settlementPeriod": period,
                           "revenueShare": [{"category": c, "percent": p}
                                            for c, p in shares.items()]}
    lic["spec"]["suspended"] = suspended
    return lic


def event(kind: str, site: str, order_id: str, amount: int, category: str = "game-cards",
          ts: datetime | None = None, **kw: Any) -> dict[str, str]:
    extra = {"ts": ts} if ts else {}
    return OrderEvent.for_order(kind, site=site, order_id=order_id, amount=amount,
                                category=category, **extra, **kw).to_fields()


async def record_payment(dsn: str, site: str, order_id: str, amount: int,
                         status: str = "paid", refunded: int = 0, kind: str = "order"
                         ) -> None:
    """What HQ's payment channel records for a paid order (the truth verify compares to);
    ``kind`` as in HQ's ``payments``: ``order``, ``topup`` or ``wallet``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO payments (id, site, order_id, amount_fen, status, refunded_fen,"
            " notify_url, return_url, paid_at, kind)"
            " VALUES (%s, %s, %s, %s, %s, %s, '', '', now(), %s)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            " refunded_fen = excluded.refunded_fen",
            (f"{site}-{order_id}", site, order_id, amount, status, refunded, kind))
