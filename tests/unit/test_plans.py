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
