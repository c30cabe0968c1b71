"""HQ's API for sub-sites (mounted at ``/api/v1``): catalogue, fulfilment, payments.

Routes only translate HTTP ⇄ the contract's models; the work is in the service modules.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import date

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kameng.contracts import hq_api
from kameng.contracts.hq_api import (
    ApiError,
    FulfilRequest,
    KpiReport,
    PaymentCreated,
    PaymentRequest,
    TicketCreate,
    TicketList,
    TicketReply,
)

from ..state import state_of
from ..web.page_cache import etag_matches
from . import approvals
from .catalog import load_catalog
from .fulfilment import fulfil
from .inventory import OutOfStock
from .kpis import store_report
from .payments import AmountMismatch, BadSiteUrl, EscrowShort, open_payment, refund_payment
from .site_auth import ApiRefused, authenticate_site, check_license, site_credential
from .statements import settlement_view, statement_csv
from .tickets import (
    TicketRefused,
    attachment,
    attachment_response,
    open_ticket,
    site_reply,
    site_tickets,
    ticket_view,
)

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse(ApiError(error=code).model_dump(), status_code=status)


def json_api(handler: Endpoint) -> Endpoint:
    """Map refusals to the contract's ``{"error": code}`` answers."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiRefused as exc:
            return _error(exc.status, exc.code)
        except TicketRefused as exc:  # a ValueError with its own code: before the next
            return _error(400, exc.code)
        except (KeyError, ValueError, TypeError):  # malformed JSON or body
            return _error(400, "bad_request")
        except OutOfStock:
            return _error(409, "out_of_stock")
        except AmountMismatch:
            return _error(409, "amount_mismatch")
        except EscrowShort:
            return _error(402, "escrow_short")
        except BadSiteUrl as exc:
            return _error(400, f"bad_{exc.field}")

    return endpoint


@json_api
async def api_catalog(request: Request) -> Response:
    authenticate_site(request)
    catalog = await load_catalog(state_of(request).pool)
    etag = catalog.etag()
    if etag_matches(etag, request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(catalog.to_json(), media_type="application/json", headers={"ETag": etag})


@json_api
async def api_fulfil(request: Request) -> Response:
    site = authenticate_site(request)
    # Paid orders of a site in grace still get their key: the customer already paid.
    claims = await check_license(request, site, allow_read_only=True)
    req = FulfilRequest.model_validate(await request.json())
    done = await fulfil(state_of(request), site, claims, req)
    return JSONResponse(done.model_dump())


@json_api
async def api_create_payment(request: Request) -> Response:
    site = authenticate_site(request)
    await check_license(request, site, allow_read_only=False)
    req = PaymentRequest.model_validate(await request.json())
    state = state_of(request)
    if not state.settings.sandbox_payments:  # the only channel: no payment nobody can pay
        raise ApiRefused(503, "payments_unavailable")
    entry = site_credential(request, site)
    payment = await open_payment(state.pool, site, req, entry.urls if entry else [])
    pay_url = state.settings.public_url + hq_api.pay_page_path(payment["id"])
    return JSONResponse(PaymentCreated(payment_id=payment["id"], pay_url=pay_url).model_dump())


@json_api
async def api_refund(request: Request) -> Response:
    # A suspended site may still give its buyers their money back.
    site = authenticate_site(request, allow_suspended=True)
    if not await refund_payment(state_of(request).pool, site, request.path_params["pid"]):
        return _error(409, "not_refundable")
    return JSONResponse({"status": "refunded"})


@json_api
async def api_settlement(request: Request) -> Response:
    # A suspended site still sees its money and why its payouts wait.
    site = authenticate_site(request, allow_suspended=True)
    view = await settlement_view(state_of(request).pool, site)
    return JSONResponse(view.model_dump())


@json_api
async def api_statement_csv(request: Request) -> Response:
    site = authenticate_site(request, allow_suspended=True)
    period = date.fromisoformat(request.path_params["period"])  # ValueError → 400
    body = await statement_csv(state_of(request).pool, site, period)
    if body is None:
        return _error(404, "no_statement")
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="statement-{site}-{period}.csv"'})


# Tickets and KPI reports need the site's token only: a suspended site can still ask HQ
# for help and still reports its numbers. Every query is filtered by the token's site.


@json_api
async def api_tickets(request: Request) -> Response:
    site = authenticate_site(request, allow_suspended=True)
    pool = state_of(request).pool
    if request.method == "POST":
        req = TicketCreate.model_validate(await request.json())
        tid = await open_ticket(pool, site, req)
        view = await ticket_view(pool, tid, site)
        return JSONResponse(view.model_dump() if view else {}, status_code=201)
    return JSONResponse(TicketList(tickets=await site_tickets(pool, site)).model_dump())


def _int_param(request: Request, name: str) -> int:
    return int(request.path_params[name])  # ValueError → 400


@json_api
async def api_ticket(request: Request) -> Response:
    site = authenticate_site(request, allow_suspended=True)
    view = await ticket_view(state_of(request).pool, _int_param(request, "tid"), site)
    if view is None:
        return _error(404, "no_ticket")
    return JSONResponse(view.model_dump())


@json_api
async def api_ticket_reply(request: Request) -> Response:
    site = authenticate_site(request, allow_suspended=True)
    req = TicketReply.model_validate(await request.json())
    tid = _int_param(request, "tid")
    if not await site_reply(state_of(request).pool, site, tid, req):
        return _error(404, "no_ticket")
    return JSONResponse({"status": "open"})


@json_api
async def api_ticket_attachment(request: Request) -> Response:
    site = authenticate_site(request, allow_suspended=True)
    found = await attachment(state_of(request).pool, _int_param(request, "tid"),
                             _int_param(request, "aid"), site)
    if found is None:
        return _error(404, "no_attachment")
    return attachment_response(*found)


@json_api
async def api_kpi_report(request: Request) -> Response:
    site = authenticate_site(request, allow_suspended=True)
    report = KpiReport.model_validate(await request.json())
    stored = await store_report(state_of(request).pool, site, report)
    return JSONResponse({"stored": stored})


API_PREFIX = "/api/v1"


def _under_mount(path: str) -> str:
    return path.removeprefix(API_PREFIX)


def routes() -> list[Route]:
    """Relative to the :data:`API_PREFIX` mount."""
    return [
        Route(_under_mount(hq_api.CATALOG_PATH), api_catalog),
        Route(_under_mount(hq_api.FULFIL_PATH), api_fulfil, methods=["POST"]),
        Route(_under_mount(hq_api.PAYMENTS_PATH), api_create_payment, methods=["POST"]),
        Route(_under_mount(hq_api.REFUND_PATH), api_refund, methods=["POST"]),
        Route(_under_mount(hq_api.SETTLEMENT_PATH), api_settlement),
        Route(_under_mount(hq_api.STATEMENT_CSV_PATH), api_statement_csv),
        *approvals.api_routes(_under_mount),
        Route(_under_mount(hq_api.TICKETS_PATH), api_tickets, methods=["GET", "POST"]),
        Route(_under_mount(hq_api.TICKET_PATH), api_ticket),
        Route(_under_mount(hq_api.TICKET_MESSAGES_PATH), api_ticket_reply, methods=["POST"]),
        Route(_under_mount(hq_api.TICKET_ATTACHMENT_PATH), api_ticket_attachment),
        Route(_under_mount(hq_api.KPI_REPORT_PATH), api_kpi_report, methods=["POST"]),
    ]
