"""The sub-site's one client of HQ's API: builds the contract's headers and bodies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from kameng.contracts import hq_api
from kameng.contracts.hq_api import (
    ApprovalList,
    ApprovalView,
    Catalog,
    ChangeRequest,
    Fulfilment,
    FulfilRequest,
    KpiReport,
    PaymentCreated,
    PaymentRequest,
    SettlementView,
    TicketCreate,
    TicketList,
    TicketReply,
    TicketView,
)


class HqError(RuntimeError):
    """HQ could not be reached (``status`` None) or refused (``status`` = HTTP status)."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code

    @classmethod
    def refused(cls, what: str, r: httpx.Response) -> HqError:
        """HQ's answer as an error, with the contract's ``{"error": code}`` when present
        (callers tell a final refusal from a transient one by it)."""
        try:
            code = str(r.json().get("error", ""))[:64]
        except Exception:  # not the contract's JSON (a proxy's page): no code
            code = ""
        return cls(f"{what} refused: HTTP {r.status_code}", r.status_code, code)


@dataclass(frozen=True)
class CatalogFetch:
    catalog: Catalog | None  # None: not modified since ``etag``
    etag: str | None


class HqClient:
    """Calls HQ as ``site`` with its API token; ``license_token`` returns the current token
    (it changes when the operator renews the license)."""

    def __init__(
        self, http: httpx.AsyncClient, hq_url: str, site: str, api_token: str,
        license_token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._http, self._hq, self._site, self._token = http, hq_url, site, api_token
        self._license = license_token

    @property
    def site(self) -> str:
        return self._site

    @property
    def api_token(self) -> str:
        """HQ signs this site's payment notifications, and the site its pay links, with
        keys derived from it (:mod:`kameng.contracts.hq_auth`)."""
        return self._token

    def _headers(self, licensed: bool) -> dict[str, str]:
        return hq_api.site_headers(
            self._site, self._token, (self._license() or "") if licensed else None
        )

    async def _post(self, path: str, json: object | None, seconds: float) -> httpx.Response:
        try:
            return await self._http.post(
                self._hq + path, json=json, headers=self._headers(licensed=True), timeout=seconds
            )
        except httpx.HTTPError as exc:
            raise HqError(f"HQ unreachable: {type(exc).__name__}") from exc

    async def catalog(self, etag: str | None) -> CatalogFetch:
        """Conditional GET of the catalogue (needs no license: it only shows products)."""
        headers = self._headers(licensed=False)
        if etag:
            headers["If-None-Match"] = etag
        try:
            r = await self._http.get(self._hq + hq_api.CATALOG_PATH, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise HqError(f"HQ unreachable: {type(exc).__name__}") from exc
        if r.status_code == 304:
            return CatalogFetch(None, etag)
        if r.status_code != 200:
            raise HqError(f"catalogue refused: HTTP {r.status_code}", r.status_code)
        return CatalogFetch(Catalog.model_validate_json(r.content), r.headers.get("etag"))

    async def create_payment(self, req: PaymentRequest) -> PaymentCreated:
        r = await self._post(hq_api.PAYMENTS_PATH, req.model_dump(), seconds=10)
        if r.status_code != 200:
            raise HqError.refused("payment channel", r)
        return PaymentCreated.model_validate_json(r.content)

    async def refund(self, payment_id: str) -> None:
        r = await self._post(hq_api.refund_path(payment_id), None, seconds=10)
        if r.status_code != 200:
            raise HqError.refused("refund", r)

    async def _get(self, path: str, seconds: float) -> httpx.Response:
        try:
            return await self._http.get(self._hq + path, headers=self._headers(licensed=False),
                                        timeout=seconds)
        except httpx.HTTPError as exc:
            raise HqError(f"HQ unreachable: {type(exc).__name__}") from exc

    async def settlement(self) -> SettlementView:
        """The site's money as HQ's ledger has it (balance, withdrawal outcomes, statements)."""
        r = await self._get(hq_api.SETTLEMENT_PATH, seconds=10)
        if r.status_code != 200:
            raise HqError.refused("settlement", r)
        return SettlementView.model_validate_json(r.content)

    async def statement_csv(self, period: str) -> bytes | None:
        r = await self._get(hq_api.STATEMENT_CSV_PATH.format(period=period), seconds=10)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise HqError.refused("statement", r)
        return r.content

    async def fulfil(self, order_id: str, product_id: str) -> Fulfilment:
        body = FulfilRequest(order_id=order_id, product_id=product_id).model_dump()
        r = await self._post(hq_api.FULFIL_PATH, body, seconds=30)
        if r.status_code != 200:
            raise HqError.refused("fulfilment", r)
        return Fulfilment.model_validate_json(r.content)

    async def request_change(self, req: ChangeRequest) -> ApprovalView:
        """Send a change of the SubSite to HQ for approval (no license header: asking is
        not selling; HQ refuses a suspended site by its registry entry)."""
        try:
            r = await self._http.post(self._hq + hq_api.APPROVALS_PATH, json=req.model_dump(),
                                      headers=self._headers(licensed=False), timeout=10)
        except httpx.HTTPError as exc:
            raise HqError(f"HQ unreachable: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise HqError.refused("change request", r)
        return ApprovalView.model_validate_json(r.content)

    async def change_requests(self) -> ApprovalList:
        r = await self._get(hq_api.APPROVALS_PATH, seconds=10)
        if r.status_code != 200:
            raise HqError.refused("change requests", r)
        return ApprovalList.model_validate_json(r.content)

    # --- support tickets and KPI reports (the site's token; no license needed) ---------

    async def _send(self, method: str, path: str, json: object | None = None,
                    seconds: float = 15) -> httpx.Response:
        try:
            return await self._http.request(method, self._hq + path, json=json,
                                            headers=self._headers(licensed=False),
                                            timeout=seconds)
        except httpx.HTTPError as exc:
            raise HqError(f"HQ unreachable: {type(exc).__name__}") from exc

    async def tickets(self) -> TicketList:
        r = await self._send("GET", hq_api.TICKETS_PATH)
        if r.status_code != 200:
            raise HqError.refused("tickets", r)
        return TicketList.model_validate_json(r.content)

    async def open_ticket(self, req: TicketCreate) -> TicketView:
        r = await self._send("POST", hq_api.TICKETS_PATH, req.model_dump(), seconds=30)
        if r.status_code != 201:
            raise HqError.refused("ticket", r)
        return TicketView.model_validate_json(r.content)

    async def ticket(self, tid: int) -> TicketView | None:
        r = await self._send("GET", hq_api.ticket_path(tid))
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise HqError.refused("ticket", r)
        return TicketView.model_validate_json(r.content)

    async def reply_ticket(self, tid: int, req: TicketReply) -> bool:
        r = await self._send("POST", hq_api.ticket_messages_path(tid), req.model_dump(),
                             seconds=30)
        if r.status_code == 404:
            return False
        if r.status_code != 200:
            raise HqError.refused("ticket reply", r)
        return True

    async def ticket_attachment(self, tid: int, aid: int) -> httpx.Response | None:
        r = await self._send("GET", hq_api.ticket_attachment_path(tid, aid))
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise HqError.refused("attachment", r)
        return r

    async def report_kpis(self, report: KpiReport) -> None:
        r = await self._send("POST", hq_api.KPI_REPORT_PATH, report.model_dump())
        if r.status_code != 200:
            raise HqError.refused("KPI report", r)
