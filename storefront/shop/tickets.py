"""The partner's support tickets (``support:tickets``): opened, read and answered in the back
office, kept at HQ and reached through the HQ API with the site's token. The shop stores
nothing: HQ's thread is the one record, and HQ filters by the token's site, so a member can
never see another site's ticket whatever id they type.

Attachments are checked here with the contract's rule before anything is sent
(``attachment_refusal``); HQ checks again for real."""

from __future__ import annotations

import base64
import logging
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.contracts.hq_api import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    TICKET_CATEGORIES,
    TICKET_PRIORITIES,
    TicketAttachmentIn,
    TicketCreate,
    TicketReply,
    attachment_refusal,
)

from ..state import state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from .hq_client import HqError

log = logging.getLogger("kameng.storefront.shop.tickets")


class AttachmentRefused(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def attachments_of(form: Any) -> list[TicketAttachmentIn]:
    """The form's files (empty file inputs skipped), each within the contract's limits."""
    out: list[TicketAttachmentIn] = []
    for f in form.getlist("attachments"):
        if not isinstance(f, UploadFile) or not f.filename:
            continue
        if len(out) >= MAX_ATTACHMENTS:
            raise AttachmentRefused("too_many_attachments")
        data = await f.read(MAX_ATTACHMENT_BYTES + 1)
        if not data:
            continue
        ctype = (f.content_type or "").split(";")[0].strip().lower()
        refusal = attachment_refusal(ctype, data)
        if refusal:
            raise AttachmentRefused(refusal)
        out.append(TicketAttachmentIn(filename=f.filename[:120], content_type=ctype,
                                      data_b64=base64.b64encode(data).decode()))
    return out


def _page(request: Request, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
    return render(request, "admin/tickets.html", status_code=status_code, me=staff,
                  section="tickets", categories=TICKET_CATEGORIES, priorities=TICKET_PRIORITIES,
                  message=request.query_params.get("msg", ""), **ctx)


@requires("support:tickets")
async def tickets_page(request: Request, staff: Staff) -> Response:
    try:
        listing = await state_of(request).hq.tickets()
    except HqError as exc:
        log.warning("tickets unavailable", extra={"error": str(exc)[:200]})
        return _page(request, staff, status_code=503, tickets=None, ticket=None)
    return _page(request, staff, tickets=listing.tickets, ticket=None)


@requires("support:tickets")
async def ticket_create(request: Request, staff: Staff) -> Response:
    form = await request.form(max_part_size=MAX_ATTACHMENT_BYTES + 1024)
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    try:
        req = TicketCreate(
            category=str(form.get("category", "")),  # type: ignore[arg-type]
            priority=str(form.get("priority", "normal")),  # type: ignore[arg-type]
            subject=str(form.get("subject", "")).strip(), text=str(form.get("text", "")).strip(),
            author=staff.email, attachments=await attachments_of(form))
    except AttachmentRefused as exc:
        return error_page(request, 400, exc.code)
    except (ValidationError, ValueError):
        return error_page(request, 400, "bad_request")
    try:
        view = await state_of(request).hq.open_ticket(req)
    except HqError as exc:
        log.warning("ticket not sent", extra={"error": str(exc)[:200], "code": exc.code})
        return error_page(request, 400 if exc.status == 400 else 503,
                          exc.code if exc.status == 400 else "hq_unreachable")
    log.info("ticket opened", extra={"ticket": view.id, "staff": staff.email,
                                     "category": view.category})
    return RedirectResponse(f"/admin/tickets/{view.id}?msg=ticket+sent", status_code=303)


def _tid(request: Request) -> int | None:
    try:
        return int(request.path_params["tid"])
    except ValueError:
        return None


@requires("support:tickets")
async def ticket_page(request: Request, staff: Staff) -> Response:
    tid = _tid(request)
    try:
        view = await state_of(request).hq.ticket(tid) if tid else None
    except HqError:
        return error_page(request, 503, "hq_unreachable")
    if view is None:
        return error_page(request, 404, "not_found")
    return _page(request, staff, tickets=None, ticket=view)


@requires("support:tickets")
async def ticket_reply(request: Request, staff: Staff) -> Response:
    form = await request.form(max_part_size=MAX_ATTACHMENT_BYTES + 1024)
    tid = _tid(request)
    if not csrf_ok(request, form) or tid is None:
        return error_page(request, 400, "bad_request")
    try:
        req = TicketReply(text=str(form.get("text", "")).strip(), author=staff.email,
                          attachments=await attachments_of(form))
    except AttachmentRefused as exc:
        return error_page(request, 400, exc.code)
    except (ValidationError, ValueError):
        return error_page(request, 400, "bad_request")
    try:
        ok = await state_of(request).hq.reply_ticket(tid, req)
    except HqError as exc:
        return error_page(request, 400 if exc.status == 400 else 503,
                          exc.code if exc.status == 400 else "hq_unreachable")
    if not ok:
        return error_page(request, 404, "not_found")
    return RedirectResponse(f"/admin/tickets/{tid}?msg=reply+sent", status_code=303)


@requires("support:tickets")
async def ticket_attachment(request: Request, staff: Staff) -> Response:
    tid = _tid(request)
    try:
        aid = int(request.path_params["aid"])
        r = await state_of(request).hq.ticket_attachment(tid, aid) if tid else None
    except ValueError:
        r = None
    except HqError:
        return error_page(request, 503, "hq_unreachable")
    if r is None:
        return error_page(request, 404, "not_found")
    # HQ's download headers (attachment, nosniff, sandbox CSP) pass through unchanged.
    keep = ("content-type", "content-disposition", "x-content-type-options",
            "content-security-policy")
    return Response(r.content, headers={k: v for k, v in r.headers.items() if k in keep})


def routes() -> list[Route]:
    """Relative to the ``/admin`` mount."""
    return [
        Route("/tickets", tickets_page),
        Route("/tickets", ticket_create, methods=["POST"]),
        Route("/tickets/{tid}", ticket_page),
        Route("/tickets/{tid}/reply", ticket_reply, methods=["POST"]),
        Route("/tickets/{tid}/attachments/{aid}", ticket_attachment),
    ]
