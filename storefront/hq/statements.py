"""HQ's view of the settlement ledger (written by the settlement worker in HQ's database):
a site's available balance, withdrawal outcomes and statements, and a statement as CSV.
SQL and rules here; the API and the back-office pages only translate."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kameng.contracts.hq_api import SettlementView, StatementSummary, WithdrawalOutcome
from kameng.ledger import repo, statements

from ..state import state_of
from ..web.auth import requires
from ..web.render import error_page, render
from ..web.staff import Staff


async def _has_ledger(conn: AsyncConnection) -> bool:
    row = await (await conn.execute(
        "SELECT to_regclass('ledger.statements') IS NOT NULL AS present")).fetchone()
    return bool(row and _row(row, 0))


async def settlement_view(pool: AsyncConnectionPool, site: str) -> SettlementView:
    """The site's money as the ledger has it; empty until the worker has run once."""
    async with pool.connection() as conn:
        if not await _has_ledger(conn):
            return SettlementView(available=0, withdrawals=[], statements=[])
        available = await repo.available_fen(conn, site)
        ws = await repo.withdrawal_status(conn, site)
        rows = await (await conn.execute(
            "SELECT period_start, period_end, figures FROM ledger.statements WHERE site = %s"
            " ORDER BY period_start DESC LIMIT 36", (site,))).fetchall()
    return SettlementView(
        available=available,
        withdrawals=[WithdrawalOutcome(withdrawal_id=w["withdrawal_id"], amount=w["amount"],
                                       currency=w["currency"], status=w["status"],
                                       reason=w["reason"]) for w in ws],
        statements=[StatementSummary(period_start=f"{_row(r, 0):%Y-%m-%d}",
                                     period_end=f"{_row(r, 1):%Y-%m-%d}", closed=True,
                                     net_payable=int(_row(r, 2)["net_payable"]),
                                     closing=int(_row(r, 2)["closing"])) for r in rows])


def _row(r: Any, i: int) -> Any:
    return list(r.values())[i] if isinstance(r, dict) else r[i]


async def statement_csv(pool: AsyncConnectionPool, site: str, period: date) -> str | None:
    """A closed statement of ``site`` starting on ``period`` as CSV, or None."""
    at = datetime(period.year, period.month, period.day, tzinfo=UTC)
    async with pool.connection() as conn:
        if not await _has_ledger(conn):
            return None
        row = await (await conn.execute(
            "SELECT period_start, period_end, figures FROM ledger.statements"
            " WHERE site = %s AND period_start = %s", (site, at))).fetchone()
    if row is None:
        return None
    return statements.to_csv(site, _row(row, 0), _row(row, 1), _row(row, 2), True)


async def all_statements(pool: AsyncConnectionPool, limit: int = 500) -> list[dict[str, Any]]:
    """Every site's closed statements, newest first (HQ's back office)."""
    async with pool.connection() as conn:
        if not await _has_ledger(conn):
            return []
        rows = await (await conn.execute(
            "SELECT site, period_start, period_end, currency, figures, closed_at"
            " FROM ledger.statements ORDER BY period_start DESC, site LIMIT %s",
            (limit,))).fetchall()
    out = []
    for r in rows:
        site, start, end, cur, fig, closed_at = (list(r.values()) if isinstance(r, dict)
                                                 else list(r))
        out.append({"site": site, "period_start": start, "period_end": end, "currency": cur,
                    "figures": fig, "closed_at": closed_at})
    return out


async def one_statement(pool: AsyncConnectionPool, site: str, period: date
                        ) -> dict[str, Any] | None:
    at = datetime(period.year, period.month, period.day, tzinfo=UTC)
    async with pool.connection() as conn:
        if not await _has_ledger(conn):
            return None
        row = await (await conn.execute(
            "SELECT site, period_start, period_end, currency, figures, closed_at"
            " FROM ledger.statements WHERE site = %s AND period_start = %s",
            (site, at))).fetchone()
    if row is None:
        return None
    site_, start, end, cur, fig, closed_at = (list(row.values()) if isinstance(row, dict)
                                              else list(row))
    return {"site": site_, "period_start": start, "period_end": end, "currency": cur,
            "figures": fig, "closed_at": closed_at}


# --- HQ back-office pages (thin: the work is above) --------------------------------------


@requires()
async def statements_page(request: Request, staff: Staff) -> Response:
    rows = await all_statements(state_of(request).pool)
    return render(request, "hq/statements.html", rows=rows, statement=None)


def _period(request: Request) -> date | None:
    try:
        return date.fromisoformat(request.path_params["period"])
    except ValueError:
        return None


@requires()
async def statement_page(request: Request, staff: Staff) -> Response:
    period = _period(request)
    st = await one_statement(state_of(request).pool, request.path_params["site"], period) \
        if period else None
    if st is None:
        return error_page(request, 404, "not_found")
    return render(request, "hq/statements.html", rows=[], statement=st)


@requires()
async def statement_csv_page(request: Request, staff: Staff) -> Response:
    period, site = _period(request), request.path_params["site"]
    body = await statement_csv(state_of(request).pool, site, period) if period else None
    if body is None:
        return error_page(request, 404, "not_found")
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="statement-{site}-{period}.csv"'})


def routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [
        Route("/statements", statements_page),
        Route("/statements/{site:str}/{period:str}.csv", statement_csv_page),
        Route("/statements/{site:str}/{period:str}", statement_page),
    ]
