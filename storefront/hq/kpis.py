"""Per-site KPIs at HQ: GMV, orders, conversion, repeat-customer, refund and complaint rates,
per site and category, as a back-office dashboard (inline SVG charts) and as Prometheus
gauges.

Computed where the data is. HQ's own records decide the money: GMV, orders and refunds come
from ``payments`` (kinds ``order`` and ``wallet``; a top-up is no sale) and the category from
the card key HQ handed out for the order. Only the shop sees its visitors and customers: it
reports per day and category (``KpiReport``), and HQ divides its own order count by the
reported visits.

Label cardinality is bounded by the cluster's objects and capped: ``site`` only for sites
in the site-credential registry (one per SubSite; at most :data:`MAX_SITES` series), and
``category`` only for categories of HQ's catalogue (at most :data:`MAX_CATEGORIES`, the
rest summed as ``other``). A report naming a category HQ does not sell is stored under
``other``, so a tenant cannot mint label values."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kameng.contracts.hq_api import MAX_KPI_DAYS, KpiReport
from kameng.contracts.hq_auth import valid_site_name

from ..state import AppState, state_of
from ..web.auth import requires
from ..web.charts import bar_chart, line_chart
from ..web.render import render
from ..web.staff import Staff
from .tickets import sla_figures

log = logging.getLogger("kameng.storefront.hq.kpis")

MAX_SITES = 2000
MAX_CATEGORIES = 32
OTHER = "other"
UNASSIGNED = "unassigned"  # paid but no key handed out (yet): refunded before delivery
WINDOW_DAYS = 30


@dataclass
class SiteKpi:
    site: str
    gmv_fen: int = 0
    orders: int = 0
    refunds: int = 0
    refunded_fen: int = 0
    visits: int = 0
    customers: int = 0
    repeat_customers: int = 0
    complaints: int = 0
    by_category: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def conversion(self) -> float:
        return self.orders / self.visits if self.visits else 0.0

    @property
    def repeat_rate(self) -> float:
        return self.repeat_customers / self.customers if self.customers else 0.0

    @property
    def refund_rate(self) -> float:
        return self.refunds / self.orders if self.orders else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.orders if self.orders else 0.0


def registered_sites(state: AppState) -> set[str]:
    """The sites HQ knows: the registry's entries (one per SubSite), capped."""
    registry = state.credentials
    directory = Path(state.settings.site_credentials_dir or ".")
    if registry is None or not directory.is_dir():
        return set()
    names = sorted(p.name for p in directory.iterdir()
                   if not p.name.startswith(".") and valid_site_name(p.name))
    return {n for n in names[:MAX_SITES] if registry.get(n) is not None}


async def catalogue_categories(pool: AsyncConnectionPool) -> list[str]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT category FROM products GROUP BY category ORDER BY count(*) DESC, category"
            " LIMIT %s", (MAX_CATEGORIES,))).fetchall()
    return [r["category"] for r in rows]  # type: ignore[call-overload, index]


def bounded(category: str, known: set[str]) -> str:
    return category if category in known or category in ("", UNASSIGNED) else OTHER


async def store_report(pool: AsyncConnectionPool, site: str, report: KpiReport) -> int:
    """Keep a shop's reported counts (latest wins per day and category); days older than
    the report window or in the future, and unknown categories, are bounded first."""
    today = datetime.now(UTC).date()
    known = set(await catalogue_categories(pool))
    rows: dict[tuple[date, str], list[int]] = {}
    for d in report.days:
        day = date.fromisoformat(d.day)  # ValueError → 400
        if not today - timedelta(days=MAX_KPI_DAYS) <= day <= today + timedelta(days=1):
            continue
        cat = d.category if d.category == "" or d.category in known else OTHER
        acc = rows.setdefault((day, cat), [0, 0, 0, 0, 0])
        for i, v in enumerate((d.visits, d.orders, d.customers, d.repeat_customers,
                               d.complaints)):
            acc[i] += v
    async with pool.connection() as conn, conn.transaction():
        for (day, cat), v in rows.items():
            await conn.execute(
                "INSERT INTO site_kpi_days (site, day, category, visits, orders, customers,"
                " repeat_customers, complaints) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (site, day, category) DO UPDATE SET visits = EXCLUDED.visits,"
                " orders = EXCLUDED.orders, customers = EXCLUDED.customers,"
                " repeat_customers = EXCLUDED.repeat_customers,"
                " complaints = EXCLUDED.complaints, reported_at = now()",
                (site, day, cat, *v))
    return len(rows)


# Sales per site and category, and per site and day (one scan, two grouping sets, so a
# refresh reads a few thousand rows, not one per site × category × day): the category is
# the one of the key HQ handed out for the order (one key per (site, order)); payments
# without a key are "unassigned".
_SALES = """
SELECT p.site, coalesce(pr.category, %(unassigned)s) AS category,
       (p.paid_at AT TIME ZONE 'UTC')::date AS day,
       grouping((p.paid_at AT TIME ZONE 'UTC')::date) AS per_category,
       count(*) AS orders,
       sum(p.amount_fen - p.refunded_fen) AS gmv_fen,
       count(*) FILTER (WHERE p.refunded_fen > 0 OR p.status = 'refunded') AS refunds,
       sum(p.refunded_fen) AS refunded_fen
FROM payments p
LEFT JOIN card_keys k ON k.site = p.site AND k.order_ref = p.order_id AND k.status = 'sold'
LEFT JOIN products pr ON pr.id = k.product_id
WHERE p.kind IN ('order', 'wallet') AND p.paid_at IS NOT NULL AND p.paid_at >= %(since)s
GROUP BY GROUPING SETS ((p.site, coalesce(pr.category, %(unassigned)s)),
                        (p.site, (p.paid_at AT TIME ZONE 'UTC')::date))
"""
_REPORTED = """
SELECT site, category, day, visits, customers, repeat_customers, complaints
FROM site_kpi_days WHERE day >= %(since)s::date
"""


@dataclass
class Dashboard:
    sites: list[SiteKpi]
    days: list[str]
    gmv_by_day: dict[str, list[float]]  # site → GMV (yuan) per day
    categories: dict[str, int]  # category → GMV fen, all sites


async def compute(state: AppState, days: int = WINDOW_DAYS, site: str | None = None
                  ) -> Dashboard:
    """Every registered site's KPIs over the last ``days`` days (``site``: one only)."""
    now = datetime.now(UTC)
    since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    sites = registered_sites(state) if site is None else {site}
    known = set(await catalogue_categories(state.pool))
    params = {"since": since, "unassigned": UNASSIGNED}
    async with state.pool.connection() as conn:
        sales = await (await conn.execute(_SALES, params)).fetchall()  # type: ignore[arg-type]
        reported = await (await conn.execute(_REPORTED, params)).fetchall()  # type: ignore[arg-type]
    out = {s: SiteKpi(s) for s in sites}
    day_list = [(since.date() + timedelta(days=i)).isoformat() for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    gmv_by_day = {s: [0.0] * days for s in sites}
    categories: dict[str, int] = {}
    for r in sales:
        k = out.get(r["site"])  # type: ignore[call-overload, index]
        if k is None:  # not (or no longer) a registered site: no series for it
            continue
        gmv, n = int(r["gmv_fen"] or 0), int(r["orders"])  # type: ignore[call-overload, index]
        if not r["per_category"]:  # type: ignore[call-overload, index]
            i = index.get(r["day"].isoformat())  # type: ignore[call-overload, index]
            if i is not None:
                gmv_by_day[k.site][i] += gmv / 100
            continue
        cat = bounded(r["category"], known)  # type: ignore[call-overload, index]
        k.gmv_fen += gmv
        k.orders += n
        k.refunds += int(r["refunds"])  # type: ignore[call-overload, index]
        k.refunded_fen += int(r["refunded_fen"] or 0)  # type: ignore[call-overload, index]
        c = k.by_category.setdefault(cat, {"gmv_fen": 0, "orders": 0, "visits": 0,
                                           "complaints": 0, "refunds": 0})
        c["gmv_fen"] += gmv
        c["orders"] += n
        c["refunds"] += int(r["refunds"])  # type: ignore[call-overload, index]
        categories[cat] = categories.get(cat, 0) + gmv
    for r in reported:
        k = out.get(r["site"])  # type: ignore[call-overload, index]
        if k is None:
            continue
        k.visits += int(r["visits"])  # type: ignore[call-overload, index]
        k.customers += int(r["customers"])  # type: ignore[call-overload, index]
        k.repeat_customers += int(r["repeat_customers"])  # type: ignore[call-overload, index]
        k.complaints += int(r["complaints"])  # type: ignore[call-overload, index]
        cat = bounded(r["category"], known)  # type: ignore[call-overload, index]
        c = k.by_category.setdefault(cat, {"gmv_fen": 0, "orders": 0, "visits": 0,
                                           "complaints": 0, "refunds": 0})
        c["visits"] += int(r["visits"])  # type: ignore[call-overload, index]
        c["complaints"] += int(r["complaints"])  # type: ignore[call-overload, index]
    ranked = sorted(out.values(), key=lambda k: (-k.gmv_fen, k.site))
    return Dashboard(ranked, day_list, gmv_by_day, categories)


def export_gauges(state: AppState, board: Dashboard) -> None:
    """Replace the KPI gauges with ``board`` (sites gone since the last refresh vanish)."""
    m = state.metrics
    for g in (m.kpi_gmv, m.kpi_orders, m.kpi_visits, m.kpi_refunds, m.kpi_complaints,
              m.kpi_conversion, m.kpi_repeat_rate, m.kpi_refund_rate, m.kpi_complaint_rate):
        g.clear()
    for k in board.sites:
        for cat, c in k.by_category.items():
            m.kpi_gmv.labels(k.site, cat).set(c["gmv_fen"] / 100)
            m.kpi_orders.labels(k.site, cat).set(c["orders"])
            m.kpi_visits.labels(k.site, cat).set(c["visits"])
            m.kpi_refunds.labels(k.site, cat).set(c["refunds"])
            m.kpi_complaints.labels(k.site, cat).set(c["complaints"])
        m.kpi_conversion.labels(k.site).set(k.conversion)
        m.kpi_repeat_rate.labels(k.site).set(k.repeat_rate)
        m.kpi_refund_rate.labels(k.site).set(k.refund_rate)
        m.kpi_complaint_rate.labels(k.site).set(k.complaint_rate)


async def export_ticket_gauges(state: AppState) -> None:
    from .tickets import SLA_BY_PRIORITY, TEAMS

    breached, open_ = await sla_figures(state.pool)
    m = state.metrics
    for team in TEAMS:  # every series exists (0 included), so rules see a value
        m.tickets_open.labels(team).set(open_.get(team, 0))
        for prio in SLA_BY_PRIORITY:
            m.tickets_breached.labels(team, prio).set(breached.get((team, prio), 0))


async def refresh(state: AppState) -> Dashboard:
    board = await compute(state)
    export_gauges(state, board)
    await export_ticket_gauges(state)
    return board


async def kpi_loop(state: AppState) -> None:
    """HQ's background refresh of the KPI and ticket gauges (a scrape costs no query)."""
    while True:
        try:
            await refresh(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed refresh keeps the last figures
            log.warning("KPI refresh failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(state.settings.kpi_seconds)


# --- the dashboard page --------------------------------------------------------------------


def charts(board: Dashboard, t: Any) -> dict[str, Any]:
    top = board.sites[:10]
    return {
        "gmv_sites": bar_chart([(k.site, k.gmv_fen / 100) for k in top], title=t("kpi_gmv"),
                               unit=" ¥", chart_id="chart-gmv"),
        "conversion": bar_chart([(k.site, round(k.conversion * 100, 2)) for k in top],
                                title=t("kpi_conversion"), unit=" %",
                                chart_id="chart-conversion"),
        "complaints": bar_chart([(k.site, round(k.complaint_rate * 100, 2)) for k in top],
                                title=t("kpi_complaint_rate"), unit=" %",
                                chart_id="chart-complaints"),
        "categories": bar_chart(sorted(((c or "—", v / 100) for c, v in
                                        board.categories.items()), key=lambda x: -x[1]),
                                title=t("kpi_gmv_by_category"), unit=" ¥",
                                chart_id="chart-categories"),
        "trend": line_chart(board.days, [(k.site, board.gmv_by_day[k.site]) for k in top[:5]],
                            title=t("kpi_gmv_trend"), unit=" ¥", chart_id="chart-trend"),
    }


@requires()
async def kpis_page(request: Request, staff: Staff) -> Response:
    from ..web.render import locale_of, translator

    state = state_of(request)
    board = await refresh(state)  # the page shows what the gauges now say
    return render(request, "hq/kpis.html", board=board,
                  charts=charts(board, translator(locale_of(request))))


def routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [Route("/kpis", kpis_page)]
