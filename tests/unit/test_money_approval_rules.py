"""The pure rules of money actions above the approval limit (issue 12, gap 1): when a
withdrawal or refund waits for HQ, how the RolePolicy's limits reach the shop, and what
HQ accepts as such a request."""

from __future__ import annotations

import pytest

from kameng.api.rolepolicy import RolePolicySpec
from kameng.children.config import site_config
from kameng.contracts.hq_api import ACTION_PERMISSIONS, normalise_change
from kameng.contracts.siteconfig import MONEY_ACTIONS, SiteConfig
from tests.unit.test_children_config import ctx

ROLES = [{"name": "fin", "permissions": ["finance:withdraw"]}]


@pytest.mark.parametrize(("approvals", "limits", "action", "amount", "waits"), [
    ([], {}, "finance:withdraw", 10**9, False),  # not listed: never
    (["finance:withdraw"], {}, "finance:withdraw", 1, True),  # listed, no limit: always
    (["finance:withdraw"], {"withdrawalFen": 50000}, "finance:withdraw", 50000, False),
    (["finance:withdraw"], {"withdrawalFen": 50000}, "finance:withdraw", 50001, True),
    (["finance:withdraw"], {"withdrawalFen": 0}, "finance:withdraw", 1, True),
    (["finance:withdraw"], {"withdrawalFen": 50000}, "orders:refund", 10**9, False),
    (["orders:refund"], {"refundFen": 2000}, "orders:refund", 2000, False),
    (["orders:refund"], {"refundFen": 2000}, "orders:refund", 2001, True),
])
def test_when_a_money_action_waits_for_hq(approvals, limits, action, amount, waits):
    cfg = SiteConfig.model_validate({"site": "s", "approvals": approvals,
                                     "approvalLimits": limits})
    assert cfg.needs_hq_approval(action, amount) is waits


def test_the_limits_reach_the_shop_through_the_site_config():
    rp = RolePolicySpec.model_validate({"roles": ROLES, "approvals": ["finance:withdraw"],
                                        "approvalLimits": {"withdrawalFen": 50000}})
    cfg = site_config(ctx(role_policy=rp))
    assert cfg.approval_limits.withdrawal_fen == 50000
    assert cfg.approval_limits.refund_fen is None
    assert SiteConfig.from_json(cfg.to_json()) == cfg  # survives the ConfigMap
    assert cfg.needs_hq_approval("finance:withdraw", 50001)
    assert site_config(ctx()).approval_limits.withdrawal_fen is None


def test_a_limit_needs_its_action_listed_and_a_sane_amount():
    with pytest.raises(ValueError, match="only has an effect"):
        RolePolicySpec.model_validate({"roles": ROLES, "approvalLimits": {"refundFen": 1}})
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        RolePolicySpec.model_validate({"roles": ROLES, "approvals": ["orders:refund"],
                                       "approvalLimits": {"refundFen": -1}})


def test_hq_accepts_action_requests_of_the_contract_shape_only():
    assert set(ACTION_PERMISSIONS) == set(MONEY_ACTIONS)
    assert normalise_change("finance:withdraw", {"amountFen": 150000, "reference": "W1"}) \
        == {"amountFen": 150000, "reference": "W1"}
    for bad in ({"amountFen": 0, "reference": "W1"}, {"amountFen": 5, "reference": ""},
                {"amountFen": 5, "reference": "W1", "extra": 1},
                {"amountFen": 5, "reference": "<script>"}):
        with pytest.raises(ValueError, match="validation error"):
            normalise_change("orders:refund", bad)
