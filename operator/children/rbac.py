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
# Operate = scale and restart, nothing that can change what a pod runs or mounts: a
# right to patch the Deployment (what `kubectl rollout restart` needs) would let a
# member add an init container that prints the mounted Secrets and read it through
# pods/log. So: scale through the scale subresource only, restart by deleting pods
# (`kubectl delete pods -l app.kubernetes.io/name=storefront`); never pods/exec,
# pods/attach, pods/portforward, ephemeral containers, pod creation or secrets.
_OPERATE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": [APP_NAME],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
]
# Sub-resources and kinds no member rule may ever name: each reaches Secret contents
# or lets a member run code inside the storefront's pods.
FORBIDDEN_RESOURCES = frozenset({
    "secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/ephemeralcontainers",
    "pods/proxy", "services/proxy", "serviceaccounts/token", "*"})
# Kinds whose write verbs would change a pod template or create pods.
_TEMPLATE_KINDS = frozenset({"pods", "deployments", "replicasets", "statefulsets",
                             "daemonsets", "jobs", "cronjobs"})
_WRITE_VERBS = frozenset({"create", "update", "patch", "*"})


def safe_rules(rules: list[dict[str, Any]]) -> bool:
    """No rule grants anything that could reach a Secret's content."""
    for r in rules:
        res = set(r.get("resources", []))
        if res & FORBIDDEN_RESOURCES:
            return False
        if res & _TEMPLATE_KINDS and set(r.get("verbs", [])) & _WRITE_VERBS:
            return False
    return True


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
        assert safe_rules(rules)  # a fixed table: a unit test proves it, this guards edits
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
