"""HQ promotes a strong site: its plans page shows every registered site's KPIs, its plan
and what a higher plan adds, and the promotion changes ``License.spec.plan`` through the
Kubernetes API (the project's own client, :mod:`kameng.kube.client`) as HQ's
ServiceAccount, which holds only the ClusterRole ``kameng-hq-plans`` (list and patch
Licenses). The operator then signs a new token and the shop opens the features; nothing
in HQ's database decides a plan. Every change is recorded (who, from, to, when).

A License kept in Git (Argo CD) would be set back by the next sync: the page says so; change
the plan in Git there."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.api.common import API_VERSION
from kameng.contracts.plans import PLANS, higher_plans
from kameng.kube.client import Kube, KubeError, path_for

from ..state import AppState, KubeUnavailable, state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from .kpis import compute

log = logging.getLogger("kameng.storefront.hq.plans")

# A site is suggested for promotion when it sells and its customers are content.
STRONG_MIN_ORDERS = 50
STRONG_MAX_COMPLAINT_RATE = 0.02


class PlansUnavailable(RuntimeError):
    """HQ has no way to the Kubernetes API (not configured)."""


def kube_of(state: AppState) -> Kube:
    """HQ's one API client (:meth:`AppState.kube_client`)."""
    try:
        return state.kube_client()
    except KubeUnavailable as exc:
        raise PlansUnavailable(str(exc)) from None


async def licenses_by_site(state: AppState) -> dict[str, dict[str, Any]]:
    """Each site's License (by ``spec.subSite``), as the API server has it."""
    items = await kube_of(state).list(path_for(API_VERSION, "License"))
    return {i["spec"]["subSite"]: i for i in items if (i.get("spec") or {}).get("subSite")}


class PromotionRefused(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def change_plan(state: AppState, site: str, to_plan: str, by: str) -> str:
    """Set the site's License to ``to_plan``; returns the plan it had. The patch carries the
    License's resourceVersion, so a concurrent edit makes it fail (409) instead of being
    overwritten."""
    if to_plan not in PLANS:
        raise PromotionRefused("unknown_plan")
    lic = (await licenses_by_site(state)).get(site)
    if lic is None:
        raise PromotionRefused("no_license")
    name, before = lic["metadata"]["name"], lic["spec"].get("plan", "")
    if before == to_plan:
        return before
    await kube_of(state).merge_patch(
        path_for(API_VERSION, "License", name),
        {"metadata": {"resourceVersion": lic["metadata"]["resourceVersion"]},
         "spec": {"plan": to_plan}}, kind="License")
    async with state.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO plan_changes (site, license, from_plan, to_plan, changed_by)"
            " VALUES (%s, %s, %s, %s, %s)", (site, name, before, to_plan, by))
    log.info("plan changed", extra={"site": site, "license": name, "from": before,
                                    "to": to_plan, "staff": by})
    return before


@requires()
async def plans_page(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    board = await compute(state)
    problem = ""
    try:
        lics = await licenses_by_site(state)
    except PlansUnavailable:
        lics, problem = {}, "plans_not_configured"
    except KubeError as exc:
        lics, problem = {}, "plans_api_error"
        log.warning("licenses not listed", extra={"status": exc.status})
    async with state.pool.connection() as conn:
        history = await (await conn.execute(
            "SELECT * FROM plan_changes ORDER BY id DESC LIMIT 50")).fetchall()
    rows = []
    for k in board.sites:
        lic = lics.get(k.site)
        plan = lic["spec"].get("plan") if lic else None
        rows.append({"kpi": k, "plan": plan, "upgrades": higher_plans(plan) if plan else [],
                     "strong": k.orders >= STRONG_MIN_ORDERS
                     and k.complaint_rate <= STRONG_MAX_COMPLAINT_RATE})
    return render(request, "hq/plans.html", rows=rows, problem=problem, history=history,
                  message=request.query_params.get("msg", ""))


@requires()
async def plan_change(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    site = request.path_params["site"]
    try:
        before = await change_plan(state_of(request), site, str(form.get("plan", "")),
                                   staff.email)
    except PromotionRefused as exc:
        return error_page(request, 409 if exc.code == "no_license" else 400, exc.code)
    except PlansUnavailable:
        return error_page(request, 503, "plans_not_configured")
    except KubeError as exc:
        log.warning("plan change refused by the API server",
                    extra={"site": site, "status": exc.status})
        return error_page(request, 409 if exc.status == 409 else 502, "plans_api_error")
    return RedirectResponse(f"/admin/plans?msg=plan+changed+{site}+from+{before}",
                            status_code=303)


def routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [Route("/plans", plans_page),
            Route("/plans/{site}", plan_change, methods=["POST"])]
