from __future__ import annotations

import pytest

from kameng.api.license import LicenseSpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.context import SiteContext
from kameng.children.namespace import PLAN_QUOTAS, limit_range, namespace, resource_quota

SPEC = {"displayName": "Demo", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example"}
LIC = {"subSite": "demo", "plan": "flagship", "categories": ["game-cards"],
       "term": {"start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"}}


def ctx(license: dict | None = None) -> SiteContext:
    lic = LicenseSpec.model_validate(license) if license else None
    return SiteContext(name="demo", uid="uid-1", spec=SubSiteSpec.model_validate(SPEC),
                       license=lic)


def test_namespace_is_restricted_labelled_and_owned_by_the_subsite() -> None:
    ns = namespace(ctx())
    md = ns["metadata"]
    assert md["name"] == "kameng-demo"
    assert md["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert md["labels"]["app.kubernetes.io/managed-by"] == "kameng"
    assert md["labels"]["kameng.io/subsite"] == "demo"
    (owner,) = md["ownerReferences"]
    assert owner == {"apiVersion": "kameng.io/v1alpha1", "kind": "SubSite", "name": "demo",
                     "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}


@pytest.mark.parametrize(("license", "plan"), [(None, "basic"), (LIC, "flagship")])
def test_quota_follows_the_license_plan(license: dict | None, plan: str) -> None:
    q = resource_quota(ctx(license))
    assert q["metadata"]["namespace"] == "kameng-demo"
    assert q["spec"]["hard"] == PLAN_QUOTAS[plan]
    assert q["spec"]["hard"]["services.loadbalancers"] == "0"


def test_flagship_gets_more_than_basic() -> None:
    basic = resource_quota(ctx())["spec"]["hard"]
    flagship = resource_quota(ctx(LIC))["spec"]["hard"]
    assert int(flagship["pods"]) > int(basic["pods"])
    assert int(flagship["requests.cpu"]) > int(basic["requests.cpu"])


def test_limit_range_sets_container_defaults() -> None:
    (limits,) = limit_range(ctx())["spec"]["limits"]
    assert limits["type"] == "Container"
    assert limits["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}
    assert "memory" in limits["default"]
