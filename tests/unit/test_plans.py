"""The one table of tiered rights (kameng.contracts.plans)."""

from __future__ import annotations

import itertools

import pytest

from kameng.api.license import Plan
from kameng.contracts.plans import (
    FEATURES,
    PLAN_FEATURES,
    PLANS,
    higher_plans,
    lowest_plan_with,
    plan_allows,
)


def test_every_plan_of_the_crd_has_a_row_and_plans_only_add():
    assert set(PLANS) == set(Plan.__args__)  # type: ignore[attr-defined]
    for lower, higher in itertools.pairwise(PLANS):
        assert PLAN_FEATURES[lower] <= PLAN_FEATURES[higher]
    assert all(f in FEATURES for fs in PLAN_FEATURES.values() for f in fs)


def test_basic_lacks_custom_domain_and_marketing_flagship_has_them():
    assert not plan_allows("basic", "custom_domain")
    assert not plan_allows("basic", "marketing")
    assert plan_allows("flagship", "custom_domain")
    assert lowest_plan_with("marketing") == "flagship"


def test_unknown_plan_unlocks_nothing_and_unknown_feature_is_an_error():
    assert not plan_allows(None, "marketing")
    assert not plan_allows("gold", "marketing")
    with pytest.raises(ValueError, match="unknown feature"):
        plan_allows("flagship", "teleport")


def test_higher_plans_list_what_they_add():
    assert higher_plans("basic") == [("flagship", list(FEATURES))]
    assert higher_plans("flagship") == []


# --- the operator's side ------------------------------------------------------------------

def _lic(plan: str):
    from kameng.api.license import LicenseSpec

    return LicenseSpec.model_validate({
        "subSite": "demo", "plan": plan, "categories": ["game"], "regions": ["CN-31"],
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
        "fees": {"currency": "CNY", "baseAnnualFee": "1000.00", "revenueShare": [],
                 "settlementPeriod": "Monthly"}})


def _ctx(plan: str | None, **spec: object):
    from kameng.api.subsite import SubSiteSpec
    from kameng.children.context import Platform, SiteContext

    base = {"displayName": "D", "owner": {"name": "P", "email": "p@x.example"},
            "licenseRef": "demo", "domain": "shop.partner.example", **spec}
    return SiteContext(name="demo", uid="u", spec=SubSiteSpec.model_validate(base),
                       platform=Platform(), license=_lic(plan) if plan else None)


def test_own_tls_on_basic_is_left_out_of_the_ingress_and_reported():
    from kameng.api import conditions as c
    from kameng.children.ingress import ingress
    from kameng.controller.plan_rights import plan_problem

    basic = _ctx("basic", tls={"secretName": "shop-cert"})
    assert "tls" not in ingress(basic)["spec"]
    assert basic.url == "http://shop.partner.example"
    reason, message = plan_problem(basic.spec, "demo", basic.license)
    assert reason == c.R_PLAN_FEATURE_MISSING
    assert "flagship" in message
    assert "spec.tls" in message

    flagship = _ctx("flagship", tls={"secretName": "shop-cert"})
    assert ingress(flagship)["spec"]["tls"][0]["secretName"] == "shop-cert"
    assert flagship.url == "https://shop.partner.example"
    assert plan_problem(flagship.spec, "demo", flagship.license) is None
    # No TLS asked for: nothing to refuse on any plan.
    assert plan_problem(_ctx("basic").spec, "demo", _lic("basic")) is None
    # Without a License (not seen yet) what was asked for stands: no flapping.
    assert _ctx(None, tls={"secretName": "shop-cert"}).own_tls
