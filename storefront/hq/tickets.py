"""Support tickets at HQ: partners open them through the HQ API (their site's token), HQ's
teams answer in the back office. Routing by category, SLA by priority, attachment limits:
the rules live here, the API and the pages only translate.

A site reaches only its own tickets: every query of the API side is filtered by the site
the token authenticated (a foreign ticket id answers 404, exactly like a missing one)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.hq_api import (
    MAX_ATTACHMENTS,
    MAX_TICKET_TEXT,
    TicketAttachmentIn,
    TicketAttachmentInfo,
    TicketCreate,
    TicketMessage,
    TicketReply,
    TicketSummary,
    TicketView,
    attachment_refusal,
)

from ..state import state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff

# Which HQ team answers which category: the one routing table.
TEAM_BY_CATEGORY: dict[str, str] = {
    "payments": "payments",
    "settlement": "finance",
    "fulfilment": "fulfilment",
    "catalog": "catalog",
    "technical": "platform",
    "account": "partner-success",
    "other": "partner-success",
}
TEAMS: tuple[str, ...] = tuple(dict.fromkeys(TEAM_BY_CATEGORY.values()))

# First-answer deadline per priority (the SLA); a ticket not answered by then is breached
# and counted on kameng_tickets_sla_breached (alert KamengTicketSlaBreached).
SLA_BY_PRIORITY: dict[str, timedelta] = {
    "urgent": timedelta(hours=1),
    "high": timedelta(hours=4),
    "normal": timedelta(hours=24),
    "low": timedelta(hours=72),
}


# Open tickets a site may have at once: a hostile tenant cannot fill HQ's database and
# queues (up to 3 × 2 MiB of attachments each); closing or answering frees a slot.
MAX_OPEN_TICKETS = 50


class TicketRefused(ValueError):
    """A ticket or reply HQ will not store; ``code`` is the API's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def decode_attachment(a: TicketAttachmentIn) -> bytes:
    """The attachment's bytes if within the limits and of the type it claims."""
    try:
        data = base64.b64decode(a.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TicketRefused("bad_attachment") from exc
    refusal = attachment_refusal(a.content_type, data)
    if refusal:
        raise TicketRefused(refusal)
    return data


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _summary(r: dict[str, Any], now: datetime) -> TicketSummary:
    return TicketSummary(
        id=r["id"], category=r["category"], priority=r["priority"], subject=r["subject"],
        status=r["status"], team=r["team"], created_at=_iso(r["created_at"]),
        due_at=_iso(r["due_at"]), breached=is_breached(r, now))


def is_breached(r: dict[str, Any], now: datetime) -> bool:
    """Breached: the first answer came after the deadline, or has not come and it passed."""
    answered = r.get("answered_at")
    return answered > r["due_at"] if answered else (r["status"] != "closed"
                                                    and now > r["due_at"])


async def _add_message(conn: AsyncConnection, tid: int, side: str, author: str, text: str,
                       files: list[tuple[TicketAttachmentIn, bytes]]) -> int:
    row = await (await conn.execute(
        "INSERT INTO ticket_messages (ticket_id, side, author, body) VALUES (%s, %s, %s, %s)"
        " RETURNING id", (tid, side, author[:200], text[:MAX_TICKET_TEXT]))).fetchone()
    mid = int(row["id"])  # type: ignore[index]
    for a, data in files:
        await conn.execute(
            "INSERT INTO ticket_attachments (message_id, filename, content_type, size, data)"
            " VALUES (%s, %s, %s, %s, %s)", (mid, a.filename[:120], a.content_type, len(data),
                                             data))
    return mid


async def open_ticket(pool: AsyncConnectionPool, site: str, req: TicketCreate,
                      now: datetime | None = None) -> int:
    files = [(a, decode_attachment(a)) for a in req.attachments[:MAX_ATTACHMENTS]]
    now = now or datetime.now(UTC)
    async with pool.connection() as conn, conn.transaction():
        # Serialised per site, so concurrent requests cannot overshoot the cap.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tickets:' || %s))",
                           (site,))
        n = await (await conn.execute(
            "SELECT count(*) AS n FROM tickets WHERE site = %s AND status = 'open'",
            (site,))).fetchone()
        if int(n["n"]) >= MAX_OPEN_TICKETS:  # type: ignore[index]
            raise TicketRefused("too_many_open_tickets")
        row = await (await conn.execute(
            "INSERT INTO tickets (site, category, priority, subject, team, created_at, due_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (site, req.category, req.priority, req.subject, TEAM_BY_CATEGORY[req.category],
             now, now + SLA_BY_PRIORITY[req.priority]))).fetchone()
        tid = int(row["id"])  # type: ignore[index]
        await _add_message(conn, tid, "site", req.author, req.text, files)
    return tid


async def site_reply(pool: AsyncConnectionPool, site: str, tid: int, req: TicketReply) -> bool:
    """The partner adds to its own ticket (re-opens an answered one); False if not theirs."""
    files = [(a, decode_attachment(a)) for a in req.attachments[:MAX_ATTACHMENTS]]
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "UPDATE tickets SET status = 'open' WHERE id = %s AND site = %s RETURNING id",
            (tid, site))).fetchone()
        if row is None:
            return False
        await _add_message(conn, tid, "site", req.author, req.text, files)
    return True


async def hq_reply(pool: AsyncConnectionPool, tid: int, author: str, text: str,
                   close: bool) -> bool:
    """HQ answers: the first answer stops the SLA clock."""
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "UPDATE tickets SET status = %s, answered_at = coalesce(answered_at, now())"
            " WHERE id = %s RETURNING id", ("closed" if close else "answered", tid))).fetchone()
        if row is None:
            return False
        await _add_message(conn, tid, "hq", author, text, [])
    return True


async def site_tickets(pool: AsyncConnectionPool, site: str) -> list[TicketSummary]:
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT * FROM tickets WHERE site = %s ORDER BY id DESC LIMIT 200",
            (site,))).fetchall()
    return [_summary(r, now) for r in rows]  # type: ignore[arg-type]


async def ticket_view(pool: AsyncConnectionPool, tid: int, site: str | None) -> TicketView | None:
    """One ticket with its thread; with ``site``, only if it is that site's."""
    async with pool.connection() as conn:
        t = await (await conn.execute(
            "SELECT * FROM tickets WHERE id = %s AND (%s::text IS NULL OR site = %s)",
            (tid, site, site))).fetchone()
        if t is None:
            return None
        msgs = await (await conn.execute(
            "SELECT * FROM ticket_messages WHERE ticket_id = %s ORDER BY id", (tid,))).fetchall()
        atts = await (await conn.execute(
            "SELECT a.id, a.message_id, a.filename, a.content_type, a.size"
            " FROM ticket_attachments a JOIN ticket_messages m ON m.id = a.message_id"
            " WHERE m.ticket_id = %s ORDER BY a.id", (tid,))).fetchall()
    by_msg: dict[int, list[TicketAttachmentInfo]] = {}
    for a in atts:
        by_msg.setdefault(a["message_id"], []).append(TicketAttachmentInfo(  # type: ignore[call-overload, index]
            id=a["id"], filename=a["filename"], content_type=a["content_type"],  # type: ignore[call-overload, index]
            size=a["size"]))  # type: ignore[call-overload, index]
    s = _summary(t, datetime.now(UTC))  # type: ignore[arg-type]
    return TicketView(**s.model_dump(), messages=[TicketMessage(
        id=m["id"], side=m["side"], author=m["author"], text=m["body"],  # type: ignore[call-overload, index]
        created_at=_iso(m["created_at"]), attachments=by_msg.get(m["id"], []))  # type: ignore[call-overload, index]
        for m in msgs])


async def attachment(pool: AsyncConnectionPool, tid: int, aid: int, site: str | None
                     ) -> tuple[str, str, bytes] | None:
    async with pool.connection() as conn:
        r = await (await conn.execute(
            "SELECT a.filename, a.content_type, a.data FROM ticket_attachments a"
            " JOIN ticket_messages m ON m.id = a.message_id JOIN tickets t ON t.id = m.ticket_id"
            " WHERE a.id = %s AND t.id = %s AND (%s::text IS NULL OR t.site = %s)",
            (aid, tid, site, site))).fetchone()
    return (r["filename"], r["content_type"], bytes(r["data"])) if r else None  # type: ignore[call-overload, index]


async def team_queue(pool: AsyncConnectionPool, team: str | None, include_closed: bool = False
                     ) -> list[dict[str, Any]]:
    """A team's tickets (all teams with None), the most urgent deadline first."""
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT * FROM tickets WHERE (%s::text IS NULL OR team = %s)"
            " AND (%s OR status <> 'closed') ORDER BY (status = 'closed'), due_at LIMIT 500",
            (team, team, include_closed))).fetchall()
    return [{**r, "breached": is_breached(r, now)} for r in rows]  # type: ignore[dict-item]


async def sla_figures(pool: AsyncConnectionPool) -> tuple[dict[tuple[str, str], int],
                                                          dict[str, int]]:
    """(breached open tickets per (team, priority), open tickets per team) for the metrics."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT team, priority, count(*) FILTER (WHERE answered_at IS NULL AND due_at < now())"
            " AS breached, count(*) AS open FROM tickets WHERE status <> 'closed'"
            " GROUP BY team, priority")).fetchall()
    breached: dict[tuple[str, str], int] = {}
    open_: dict[str, int] = {}
    for r in rows:
        breached[(r["team"], r["priority"])] = int(r["breached"])  # type: ignore[call-overload, index]
        open_[r["team"]] = open_.get(r["team"], 0) + int(r["open"])  # type: ignore[call-overload, index]
    return breached, open_


# --- HQ back-office pages ---------------------------------------------------------------


@requires()
async def tickets_page(request: Request, staff: Staff) -> Response:
    team = request.query_params.get("team") or None
    if team is not None and team not in TEAMS:
        return error_page(request, 404, "not_found")
    rows = await team_queue(state_of(request).pool, team,
                            include_closed=request.query_params.get("closed") == "1")
    return render(request, "hq/tickets.html", rows=rows, team=team, teams=TEAMS, ticket=None,
                  message=request.query_params.get("msg", ""))


def _tid(request: Request) -> int | None:
    try:
        return int(request.path_params["tid"])
    except ValueError:
        return None


@requires()
async def ticket_page(request: Request, staff: Staff) -> Response:
    tid = _tid(request)
    view = await ticket_view(state_of(request).pool, tid, None) if tid else None
    if view is None:
        return error_page(request, 404, "not_found")
    return render(request, "hq/tickets.html", rows=[], team=view.team, teams=TEAMS,
                  ticket=view, message=request.query_params.get("msg", ""))


@requires()
async def ticket_answer(request: Request, staff: Staff) -> Response:
    form = await request.form()
    tid = _tid(request)
    text = str(form.get("text", "")).strip()
    if not csrf_ok(request, form) or tid is None or not text:
        return error_page(request, 400, "bad_request")
    if not await hq_reply(state_of(request).pool, tid, staff.email, text,
                          close=form.get("close") == "1"):
        return error_page(request, 404, "not_found")
    return RedirectResponse(f"/admin/tickets/{tid}?msg=answered", status_code=303)


@requires()
async def ticket_attachment_page(request: Request, staff: Staff) -> Response:
    tid = _tid(request)
    try:
        aid = int(request.path_params["aid"])
    except ValueError:
        return error_page(request, 404, "not_found")
    found = await attachment(state_of(request).pool, tid, aid, None) if tid else None
    if found is None:
        return error_page(request, 404, "not_found")
    return attachment_response(*found)


def attachment_response(filename: str, content_type: str, data: bytes) -> Response:
    """Always a download, never rendered in HQ's origin: a tenant's file runs nothing."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:120]
    return Response(data, media_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{safe}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox"})


def routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [
        Route("/tickets", tickets_page),
        Route("/tickets/{tid}", ticket_page),
        Route("/tickets/{tid}/answer", ticket_answer, methods=["POST"]),
        Route("/tickets/{tid}/attachments/{aid}", ticket_attachment_page),
    ]
