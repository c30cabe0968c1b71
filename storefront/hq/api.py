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
from kameng.contracts.hq_api import ApiError, FulfilRequest, PaymentCreated, PaymentRequest

from ..state import state_of
from ..web.page_cache import etag_matches
from .catalog import load_catalog
from .fulfilment import fulfil
from .inventory import OutOfStock
from .payments import AmountMismatch, BadSiteUrl, EscrowShort, open_payment, refund_payment
from .site_auth import ApiRefused, authenticate_site, check_license, site_credential
from .statements import settlement_view, statement_csv

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
    ]
