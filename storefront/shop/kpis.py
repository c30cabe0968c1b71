"""The shop's KPIs: what only the shop can count (visits, customers, complaints), per day and
category, from its own database and its Redis keys; reported to HQ (``KpiReport``) and shown
to the partner's staff (``reports:read``) with inline SVG charts.

Visits are counted in Redis (``site:<site>:kpi:visits:<day>``, one hash per UTC day, field =
category, "" for pages without one; kept 40 days): counted in each worker's memory and
added every second (``web.visit_tally``), no database write. Only the shop's own routes
count and a category is counted only for a product the shop shows, so neither the keys
nor HQ's labels grow with what a visitor sends.
No customer identity leaves the shop: the report carries counts."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kameng.contracts.hq_api import MAX_KPI_DAYS, KpiDay, KpiReport

from ..state import AppState, state_of
from ..web.auth import requires
from ..web.charts import bar_chart, line_chart
from ..web.render import locale_of, render, translator
from ..web.staff import Staff
from ..web.visit_tally import VISIT_FLUSH_SECONDS
from .hq_client import HqError
from .plans import has_feature, requires_feature

log = logging.getLogger("kameng.storefront.shop.kpis")
VISIT_TTL_SECONDS = 40 * 86400
PAID_STATES = ("paid", "delivered", "refunded", "frozen")


def visits_key(site: str, day: date) -> str:
    return f"site:{site}:kpi:visits:{day.isoformat()}"


async def count_visit(state: AppState, page: str, category: str = "") -> None:
    """Count one page view: no I/O (``web.visit_tally``; :func:`visit_flush_loop` adds it)."""
    state.metrics.visit_counter(page).inc()
    state.visits.add(category)


async def flush_visits(state: AppState) -> None:
    site = state.site
    await state.visits.flush(state.redis, lambda day: visits_key(site, day), VISIT_TTL_SECONDS)


async def visit_flush_loop(state: AppState) -> None:
    """Every worker's own (its tally is in its memory): flush, sleep, until cancelled; the
    app's lifespan flushes once more at shutdown."""
    while True:
        await asyncio.sleep(VISIT_FLUSH_SECONDS)
        try:
            await flush_visits(state)
        except Exception as exc:
            log.warning("visits not counted yet", extra={"error": type(exc).__name__})


@dataclass
class DayRow:
    day: str
    category: str
    visits: int = 0
    orders: int = 0
    customers: int = 0
    repeat_customers: int = 0
    complaints: int = 0
    gmv_fen: int = 0
    refunds: int = 0


# Per UTC day and category: paid orders, GMV (refunds deducted), refunds, paying customers
# and, of those, ones with an earlier paid order (repeat customers).
_ORDERS = """
WITH paid AS (
  SELECT id, category, contact_hash, amount_fen, status, paid_at,
         (paid_at AT TIME ZONE 'UTC')::date AS day
  FROM orders WHERE paid_at IS NOT NULL AND status = ANY(%(states)s)
)
SELECT p.day, p.category, count(*) AS orders,
       sum(CASE WHEN p.status = 'refunded' THEN 0 ELSE p.amount_fen END) AS gmv_fen,
       count(*) FILTER (WHERE p.status = 'refunded') AS refunds,
       count(DISTINCT p.contact_hash) AS customers,
       count(DISTINCT p.contact_hash) FILTER (WHERE EXISTS (
         SELECT 1 FROM orders o WHERE o.contact_hash = p.contact_hash
           AND o.paid_at IS NOT NULL AND o.paid_at < p.paid_at AND o.id <> p.id
       )) AS repeat_customers
FROM paid p WHERE p.paid_at >= %(since)s GROUP BY 1, 2
"""
_COMPLAINTS = """
SELECT (d.opened_at AT TIME ZONE 'UTC')::date AS day, o.category, count(*) AS n
FROM order_disputes d JOIN orders o ON o.id = d.order_id
WHERE d.opened_at >= %(since)s GROUP BY 1, 2
"""


async def daily(state: AppState, days: int) -> list[DayRow]:
    """The shop's counts for the last ``days`` UTC days (today included)."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), UTC)
    rows: dict[tuple[str, str], DayRow] = {}

    def row(day: str, cat: str) -> DayRow:
        return rows.setdefault((day, cat), DayRow(day, cat))

    params: dict[str, Any] = {"since": since, "states": list(PAID_STATES)}
    async with state.pool.connection() as conn:
        for r in await (await conn.execute(_ORDERS, params)).fetchall():  # type: ignore[arg-type]
            d = row(r["day"].isoformat(), r["category"])  # type: ignore[call-overload, index]
            d.orders, d.customers = int(r["orders"]), int(r["customers"])  # type: ignore[call-overload, index]
            d.repeat_customers = int(r["repeat_customers"])  # type: ignore[call-overload, index]
            d.gmv_fen, d.refunds = int(r["gmv_fen"] or 0), int(r["refunds"])  # type: ignore[call-overload, index]
        for r in await (await conn.execute(_COMPLAINTS, params)).fetchall():  # type: ignore[arg-type]
            row(r["day"].isoformat(), r["category"]).complaints = int(r["n"])  # type: ignore[call-overload, index]
    pipe = state.redis.pipeline(transaction=False)
    day_list = [first + timedelta(days=i) for i in range(days)]
    for d in day_list:
        pipe.hgetall(visits_key(state.site, d))
    for d, counts in zip(day_list, await pipe.execute(), strict=True):
        for cat, n in (counts or {}).items():
            row(d.isoformat(), cat).visits = int(n)
    return sorted(rows.values(), key=lambda r: (r.day, r.category))


def report_of(rows: list[DayRow]) -> KpiReport:
    return KpiReport(days=[KpiDay(day=r.day, category=r.category[:64], visits=r.visits,
                                  orders=r.orders, customers=r.customers,
                                  repeat_customers=r.repeat_customers,
                                  complaints=r.complaints) for r in rows])


async def report_once(state: AppState) -> None:
    await state.hq.report_kpis(report_of(await daily(state, MAX_KPI_DAYS)))


async def report_loop(state: AppState) -> None:
    """Report to HQ every ``kpi_seconds`` (the last 35 days: a missed report heals)."""
    while True:
        try:
            await report_once(state)
        except asyncio.CancelledError:
            raise
        except HqError as exc:
            log.warning("KPI report not delivered", extra={"error": str(exc)[:200]})
        except Exception as exc:
            log.warning("KPI report failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(state.settings.kpi_seconds)


@dataclass
class Totals:
    visits: int = 0
    orders: int = 0
    gmv_fen: int = 0
    refunds: int = 0
    customers: int = 0
    repeat_customers: int = 0
    complaints: int = 0
    by_category: dict[str, dict[str, int]] = field(default_factory=dict)

    def rate(self, num: int, den: int) -> float:
        return num / den if den else 0.0


def totals(rows: list[DayRow]) -> Totals:
    t = Totals()
    for r in rows:
        t.visits += r.visits
        t.orders += r.orders
        t.gmv_fen += r.gmv_fen
        t.refunds += r.refunds
        t.customers += r.customers
        t.repeat_customers += r.repeat_customers
        t.complaints += r.complaints
        c = t.by_category.setdefault(r.category, {"gmv_fen": 0, "orders": 0, "visits": 0})
        c["gmv_fen"] += r.gmv_fen
        c["orders"] += r.orders
        c["visits"] += r.visits
    return t


@requires("reports:read")
async def kpis_page(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    days = 30
    rows = await daily(state, days)
    tot = totals(rows)
    first = datetime.now(UTC).date() - timedelta(days=days - 1)
    xs = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    gmv = dict.fromkeys(xs, 0.0)
    visits = dict.fromkeys(xs, 0.0)
    orders = dict.fromkeys(xs, 0.0)
    for r in rows:
        gmv[r.day] = gmv.get(r.day, 0) + r.gmv_fen / 100
        visits[r.day] = visits.get(r.day, 0) + r.visits
        orders[r.day] = orders.get(r.day, 0) + r.orders
    t = translator(locale_of(request))
    charts = {
        "gmv": line_chart(xs, [(t("kpi_gmv"), [gmv[x] for x in xs])], title=t("kpi_gmv_trend"),
                          unit=" ¥", chart_id="chart-gmv"),
        "traffic": line_chart(xs, [(t("kpi_visits"), [visits[x] for x in xs]),
                                   (t("orders"), [orders[x] for x in xs])],
                              title=t("kpi_visits"), chart_id="chart-traffic"),
        "categories": bar_chart(sorted(((c or "—", v["gmv_fen"] / 100) for c, v in
                                        tot.by_category.items() if v["gmv_fen"]),
                                       key=lambda x: -x[1]),
                                title=t("kpi_gmv_by_category"), unit=" ¥",
                                chart_id="chart-categories"),
    }
    return render(request, "admin/kpis.html", me=staff, section="kpis", tot=tot,
                  charts=charts, message="", can_export=has_feature(state, "kpi_export"))


KPI_CSV_COLUMNS = ("day", "category", "visits", "orders", "gmv_fen", "refunds", "customers",
                   "repeat_customers", "complaints")


def kpi_csv(rows: list[DayRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(KPI_CSV_COLUMNS)
    for r in rows:
        w.writerow([getattr(r, c) for c in KPI_CSV_COLUMNS])
    return buf.getvalue()


@requires("reports:read")
@requires_feature("kpi_export")
async def kpis_csv(request: Request, staff: Staff) -> Response:
    rows = await daily(state_of(request), MAX_KPI_DAYS)
    return Response(kpi_csv(rows), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="kpis.csv"'})


def routes() -> list[Route]:
    """Relative to the ``/admin`` mount."""
    return [Route("/kpis", kpis_page), Route("/kpis.csv", kpis_csv)]
