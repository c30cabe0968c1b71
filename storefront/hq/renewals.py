"""Renewal from HQ's back office (``/admin/renewals``).

HQ renews a License through the Kubernetes API with its own ServiceAccount, whose only
right is ``patch`` on ``licenses`` (ClusterRole ``kameng-hq-renewals``). So it reads
with a patch too: a JSON patch of ``test`` operations only changes nothing and returns
the License, and proves it belongs to the site. The new term comes from the one
computation (:func:`kameng.licensing.term.renewal_of_spec`, the License's own strategy)
and is written by a second JSON patch that first tests the end the person confirmed:
a page submitted twice, or a renewal by someone else in between, fails that test
instead of extending twice. The renewal invoice then goes to the ledger
(:mod:`kameng.ledger.invoices`, idempotent by renewal).

Flow: the form names a site (and its License, by default the site's name) and a
duration → a preview page shows the current and the new term and the invoice → Confirm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kameng.api.common import API_VERSION
from kameng.api.resources import LICENSE
from kameng.contracts.hq_auth import valid_site_name
from kameng.contracts.money import fen_to_str
from kameng.kube.client import Kube, KubeError, path_for
from kameng.ledger import invoices, repo
from kameng.ledger.rules import Rates
from kameng.licensing.lifecycle import not_renewable
from kameng.licensing.term import Term, format_time, parse_duration, renewal_of_spec

from ..state import state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff

log = logging.getLogger("kameng.storefront.hq.renewals")
DEFAULT_EXTEND = "8760h"  # a year


class RenewalRefused(Exception):
    """Why a renewal was not made; ``code`` is a locale key, never API detail."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Plan:
    site: str
    license: str
    extend: str
    before: Term
    after: Term
    strategy: str
    invoice: invoices.Invoice
    rates: Rates
    raw_end: str  # spec.term.end exactly as stored (what the write tests)


def _path(name: str) -> str:
    return path_for(API_VERSION, LICENSE.kind, name)


async def _read(kube: Kube, site: str, name: str) -> dict[str, Any]:
    """The License, read with ``patch`` alone; refused unless it is ``site``'s."""
    try:
        return await kube.json_patch(
            _path(name), [{"op": "test", "path": "/spec/subSite", "value": site}],
            kind=LICENSE.kind)
    except KubeError as e:
        log.warning("renewal: License not readable", extra={"license": name,
                                                             "status": e.status})
        raise RenewalRefused("renewal_not_found" if e.status in (404, 422)
                             else "renewal_unavailable") from None


async def plan(kube: Kube, site: str, name: str, extend: str, now: datetime) -> Plan:
    if not valid_site_name(site) or not valid_site_name(name):
        raise RenewalRefused("renewal_bad_input")
    try:
        by = parse_duration(extend)
    except ValueError:
        raise RenewalRefused("renewal_bad_input") from None
    obj = await _read(kube, site, name)
    if not_renewable(obj):
        raise RenewalRefused("renewal_terminated")
    spec = obj["spec"]
    try:
        before, after = renewal_of_spec(spec, by, now)
    except ValueError:
        raise RenewalRefused("renewal_bad_input") from None
    rates = Rates.from_fees(spec.get("fees") or {}, license=name,
                            generation=int(obj["metadata"].get("generation", 0)))
    return Plan(site=site, license=name, extend=extend, before=before, after=after,
                strategy=(spec.get("renewal") or {}).get("strategy", "FromExpiry"),
                invoice=invoices.renewal_invoice(name, site, rates, before, after),
                rates=rates, raw_end=str(spec["term"]["end"]))


async def apply(kube: Kube, p: Plan) -> None:
    """Write the new term if the License still ends where the preview said."""
    ops = [{"op": "test", "path": "/spec/subSite", "value": p.site},
           {"op": "test", "path": "/spec/term/end", "value": p.raw_end},
           {"op": "replace", "path": "/spec/term",
            "value": {"start": format_time(p.after.start), "end": format_time(p.after.end)}}]
    try:
        await kube.json_patch(_path(p.license), ops, kind=LICENSE.kind)
    except KubeError as e:
        # 422: a test failed — renewed already (a second submit) or changed meanwhile.
        raise RenewalRefused("renewal_stale" if e.status == 422
                             else "renewal_unavailable") from None


async def renew(state: Any, p: Plan, by: str, now: datetime) -> bool:
    """Renew and invoice. Returns whether an invoice was posted (False: no base fee)."""
    kube = state.kube_client()
    await apply(kube, p)
    # A connection of its own: the ledger code reads tuple rows (the pool's are dicts),
    # and renewals are rare.
    async with await AsyncConnection.connect(state.settings.database_url) as conn:
        await repo.migrate(conn)  # the ledger may not exist before the worker's first run
        async with conn.transaction():
            posted = await invoices.post_invoice(conn, p.invoice, p.rates, now)
    log.info("license renewed", extra={"site": p.site, "license": p.license, "by": by,
                                       "end": format_time(p.after.end),
                                       "invoice_fen": p.invoice.amount})
    return posted


def _view(p: Plan) -> dict[str, Any]:
    return {"site": p.site, "license": p.license, "extend": p.extend, "strategy": p.strategy,
            "start": format_time(p.before.start), "end": format_time(p.before.end),
            "new_start": format_time(p.after.start), "new_end": format_time(p.after.end),
            "amount": fen_to_str(p.invoice.amount), "currency": p.invoice.currency}


def _enabled(request: Request) -> Response | None:
    if state_of(request).settings.renewals_enabled:
        return None
    return error_page(request, 503, "renewals_disabled")


@requires()
async def renewals_page(request: Request, staff: Staff) -> Response:
    if (off := _enabled(request)) is not None:
        return off
    q = request.query_params
    site = q.get("site", "")
    ctx: dict[str, Any] = {"default_extend": DEFAULT_EXTEND, "message": q.get("msg", "")}
    if site:
        try:
            p = await plan(state_of(request).kube_client(), site, q.get("license") or site,
                           q.get("extend") or DEFAULT_EXTEND, datetime.now(UTC))
        except RenewalRefused as e:
            return render(request, "hq/renewals.html", status_code=400, error=e.code, **ctx)
        ctx["preview"] = _view(p)
    return render(request, "hq/renewals.html", **ctx)


@requires()
async def renewals_confirm(request: Request, staff: Staff) -> Response:
    if (off := _enabled(request)) is not None:
        return off
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    site, name = str(form.get("site", "")), str(form.get("license", ""))
    state = state_of(request)
    now = datetime.now(UTC)
    try:
        p = await plan(state.kube_client(), site, name, str(form.get("extend", "")), now)
        # The person confirmed a preview from this end; anything else is stale.
        if format_time(p.before.end) != str(form.get("from_end", "")):
            raise RenewalRefused("renewal_stale")
        await renew(state, p, staff.email, now)
    except RenewalRefused as e:
        return render(request, "hq/renewals.html", status_code=409, error=e.code,
                      default_extend=DEFAULT_EXTEND)
    return render(request, "hq/renewals.html", done=_view(p), default_extend=DEFAULT_EXTEND)


def routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [Route("/renewals", renewals_page),
            Route("/renewals", renewals_confirm, methods=["POST"])]
