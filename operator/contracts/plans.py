"""What each plan unlocks: the ONE table of tiered rights.

A plan (``License.spec.plan``) sizes quotas and unlocks FEATURES. The operator (a custom
domain on a plan without it is refused in the SubSite's status), the shop (a route of a
locked feature answers 403 with an upgrade hint; the back office shows what a higher plan
adds) and HQ (the plans page, promotion) all read this module; nothing else spells a
feature or decides whether a plan has it.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "FEATURES",
    "PLANS",
    "PLAN_FEATURES",
    "Feature",
    "higher_plans",
    "lowest_plan_with",
    "plan_allows",
]

# Only features something enforces are listed: a row here is refused on every side that
# offers it (custom_domain: operator; marketing: back office, checkout, shop front;
# kpi_export: back office).
Feature = Literal[
    "custom_domain",  # the site's own TLS certificate for its domain (spec.tls)
    "marketing",  # coupons and announcements in the back office and at checkout
    "kpi_export",  # the KPI page's CSV export
]
FEATURES: tuple[str, ...] = get_args(Feature)

# Plans in ascending order: every plan has at least what the one before it has.
PLANS: tuple[str, ...] = ("basic", "flagship")

PLAN_FEATURES: dict[str, frozenset[str]] = {
    "basic": frozenset(),
    "flagship": frozenset(FEATURES),
}


def plan_allows(plan: str | None, feature: str) -> bool:
    """Whether ``plan`` unlocks ``feature``; an unknown plan unlocks nothing (fail closed)."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}")
    return feature in PLAN_FEATURES.get(plan or "", frozenset())


def lowest_plan_with(feature: str) -> str | None:
    """The cheapest plan that unlocks ``feature`` (the upgrade hint), or None."""
    return next((p for p in PLANS if plan_allows(p, feature)), None)


def higher_plans(plan: str | None) -> list[tuple[str, list[str]]]:
    """Each plan above ``plan`` with the features it adds over ``plan``, in order."""
    have = PLAN_FEATURES.get(plan or "", frozenset())
    start = PLANS.index(plan) + 1 if plan in PLANS else 0
    return [(p, [f for f in FEATURES if f in PLAN_FEATURES[p] - have]) for p in PLANS[start:]]
