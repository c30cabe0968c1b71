"""ServiceAccount and per-member Role + RoleBinding.

A member gets Kubernetes rights only when they have a ``kubernetesUser`` and their role
in the RolePolicy grants ``kubernetes.access`` other than ``none``. Secrets are never
readable: the site's credentials stay with the storefront.
"""

from __future__ import annotations

from typing import Any

from kameng.api.subsite import Member

from .context import APP_NAME, SiteContext, meta

MEMBER_PREFIX = "member-"

_VIEW_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events", "services",
                                      "configmaps", "endpoints"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
     "verbs": ["get", "list", "watch"]},
]
_OPERATE_RULES: list[dict[str, Any]] = [
    # Restart (rollout restart patches the template) and scale the storefront only.
    {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [APP_NAME],
     "verbs": ["patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": [APP_NAME],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
]


def service_account(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(ctx, APP_NAME, APP_NAME),
        # The storefront never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
    }


def member_access(ctx: SiteContext, member: Member) -> str:
    """The Kubernetes access level of a member: none, view or operate."""
    if not member.kubernetes_user or ctx.role_policy is None:
        return "none"
    for role in ctx.role_policy.roles:
        if role.name == member.role:
            return role.kubernetes.access if role.kubernetes else "none"
    return "none"


def member_rbac(ctx: SiteContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for member in ctx.spec.members:
        access = member_access(ctx, member)
        if access == "none":
            continue
        name = f"{MEMBER_PREFIX}{member.name}"
        rules = [*_VIEW_RULES, *(_OPERATE_RULES if access == "operate" else [])]
        role_meta = meta(ctx, name)
        role_meta["annotations"] = {"kameng.io/member-role": member.role,
                                    "kameng.io/access": access}
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": role_meta,
            "rules": rules,
        })
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(ctx, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": member.kubernetes_user}],
        })
    return out
