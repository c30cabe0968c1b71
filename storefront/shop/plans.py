"""Tiered rights in the shop: a feature the site's plan lacks is refused (403 with the plan
that would unlock it), and the back office shows what a higher plan adds. The plan is the
one in the signed license token (HQ signs it from ``License.spec.plan``), never the site
config; the table is :mod:`kameng.contracts.plans`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kameng.contracts.plans import FEATURES, PLAN_FEATURES, higher_plans, lowest_plan_with
from kameng.contracts.plans import plan_allows as _plan_allows

from ..state import AppState, state_of
from ..web.auth import requires
from ..web.render import render
from ..web.staff import Staff

log = logging.getLogger("kameng.storefront.shop.plans")

StaffHandler = Callable[[Request, Staff], Awaitable[Response]]


def current_plan(state: AppState) -> str | None:
    claims = state.guard().claims
    return claims.plan if claims is not None else None


def has_feature(state: AppState, feature: str) -> bool:
    return _plan_allows(current_plan(state), feature)


def locked_page(request: Request, staff: Staff, feature: str) -> Response:
    return render(request, "admin/plan.html", status_code=403, me=staff, section="plan",
                  plan=current_plan(state_of(request)), locked=feature,
                  unlock_plan=lowest_plan_with(feature), features=FEATURES,
                  plan_features=PLAN_FEATURES, upgrades=higher_plans(current_plan(
                      state_of(request))), message="")


def requires_feature(feature: str) -> Callable[[StaffHandler], StaffHandler]:
    """Inner guard under ``@requires(perm)``: the plan must unlock ``feature``."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}")

    def wrap(handler: StaffHandler) -> StaffHandler:
        @functools.wraps(handler)
        async def guarded(request: Request, staff: Staff) -> Response:
            if not has_feature(state_of(request), feature):
                log.info("feature refused by plan", extra={
                    "feature": feature, "plan": current_plan(state_of(request)),
                    "staff": staff.email})
                return locked_page(request, staff, feature)
            return await handler(request, staff)

        guarded.feature = feature  # type: ignore[attr-defined]  # for tests / review
        return guarded

    return wrap


@requires("reports:read")
async def plan_page(request: Request, staff: Staff) -> Response:
    plan = current_plan(state_of(request))
    return render(request, "admin/plan.html", me=staff, section="plan", plan=plan,
                  locked=None, unlock_plan=None, features=FEATURES,
                  plan_features=PLAN_FEATURES, upgrades=higher_plans(plan), message="")


def routes() -> list[Route]:
    """Relative to the ``/admin`` mount."""
    return [Route("/plan", plan_page)]
