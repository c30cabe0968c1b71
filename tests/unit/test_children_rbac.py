from __future__ import annotations

from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.context import SiteContext
from kameng.children.rbac import member_rbac, service_account

POLICY = RolePolicySpec.model_validate({"roles": [
    {"name": "site-admin", "permissions": ["catalog:write"], "kubernetes": {"access": "view"}},
    {"name": "ops", "permissions": ["orders:read"], "kubernetes": {"access": "operate"}},
    {"name": "finance", "permissions": ["finance:read"]},
]})


def ctx(members: list[dict], policy: RolePolicySpec | None = POLICY) -> SiteContext:
    spec = SubSiteSpec.model_validate({
        "displayName": "Demo", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example", "members": members})
    return SiteContext(name="demo", uid="u", spec=spec, role_policy=policy)


def m(name: str, role: str, user: str | None = None) -> dict:
    out = {"name": name, "email": f"{name}@x.example", "role": role}
    if user:
        out["kubernetesUser"] = user
    return out


def test_service_account_has_no_token() -> None:
    sa = service_account(ctx([]))
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["name"] == "storefront"


def test_only_members_with_user_and_access_get_rbac() -> None:
    objs = member_rbac(ctx([m("a", "site-admin", "alice"), m("b", "site-admin"),
                            m("c", "finance", "carol")]))
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Role", "member-a"), ("RoleBinding", "member-a")]
    binding = objs[1]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "alice"}]
    assert binding["roleRef"]["name"] == "member-a"


def test_view_is_read_only_and_operate_can_restart_and_scale() -> None:
    view, _, operate, _ = member_rbac(ctx([m("a", "site-admin", "alice"),
                                           m("o", "ops", "oscar")]))
    view_verbs = {v for r in view["rules"] for v in r["verbs"]}
    assert view_verbs == {"get", "list", "watch"}
    operate_verbs = {v for r in operate["rules"] for v in r["verbs"]}
    assert {"patch", "delete"} <= operate_verbs


def test_secrets_are_never_granted() -> None:
    for obj in member_rbac(ctx([m("a", "site-admin", "alice"), m("o", "ops", "oscar")])):
        for rule in obj.get("rules", []):
            assert "secrets" not in rule["resources"]
            assert "*" not in rule["resources"]
            assert "*" not in rule["verbs"]


def test_unknown_policy_grants_nothing() -> None:
    assert member_rbac(ctx([m("a", "site-admin", "alice")], policy=None)) == []
