from __future__ import annotations

from collections import Counter

from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.build import build_children
from kameng.children.context import SiteContext, SiteSecrets
from kameng.children.workload import CHECKSUM_ANNOTATION

SPEC = {"displayName": "D", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example",
        "members": [{"name": "li", "email": "li@x.example", "role": "site-admin",
                     "kubernetesUser": "li"}]}
RP = RolePolicySpec.model_validate({"roles": [
    {"name": "site-admin", "permissions": ["catalog:read"], "kubernetes": {"access": "view"}}]})


def ctx(secrets: SiteSecrets | None = None) -> SiteContext:
    return SiteContext(name="demo", uid="u", spec=SubSiteSpec.model_validate(SPEC),
                       role_policy=RP, secrets=secrets or SiteSecrets())


def test_every_child_of_the_design_exists_once() -> None:
    kinds = Counter(o["kind"] for o in build_children(ctx()))
    assert kinds == Counter({"Namespace": 1, "ResourceQuota": 1, "LimitRange": 1,
                             "NetworkPolicy": 2, "ServiceAccount": 1, "Role": 1,
                             "RoleBinding": 1, "ConfigMap": 1, "Secret": 4, "Deployment": 1,
                             "Service": 1, "Ingress": 1, "PodDisruptionBudget": 1})
    keys = [(o["kind"], o["metadata"]["name"]) for o in build_children(ctx())]
    assert len(keys) == len(set(keys))


def test_namespace_first_deployment_after_its_volumes() -> None:
    kinds = [o["kind"] for o in build_children(ctx())]
    assert kinds[0] == "Namespace"
    assert kinds.index("Deployment") > max(i for i, k in enumerate(kinds)
                                           if k in ("Secret", "ConfigMap"))


def test_children_carry_only_kameng_labels() -> None:
    for obj in build_children(ctx()):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kameng"
        assert labels["kameng.io/subsite"] == "demo"
        # Argo CD's tracking label must never be copied onto children.
        assert "app.kubernetes.io/instance" not in labels
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "kameng-demo"


def test_a_secret_change_rolls_the_deployment() -> None:
    def checksum(s: SiteSecrets) -> str:
        dep = next(o for o in build_children(ctx(s)) if o["kind"] == "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]

    assert checksum(SiteSecrets(license_token="a")) != checksum(SiteSecrets(license_token="b"))
    assert checksum(SiteSecrets(license_token="a")) == checksum(SiteSecrets(license_token="a"))
