"""Namespace, ResourceQuota and LimitRange: the site's isolated, sized home."""

from __future__ import annotations

from typing import Any

from kameng.api.kinds import SUBSITE_UID_LABEL

from .context import MANAGED_BY, SiteContext, labels, meta, owner_reference

# Sized so that the largest storefront a plan allows (20 replicas of the default pod)
# plus a rolling update fits, and nothing else of size does.
PLAN_QUOTAS: dict[str, dict[str, str]] = {
    "basic": {
        "requests.cpu": "4", "requests.memory": "8Gi", "limits.memory": "16Gi",
        "pods": "30", "services": "5", "secrets": "20", "configmaps": "20",
        "persistentvolumeclaims": "0", "services.loadbalancers": "0",
        "services.nodeports": "0",
    },
    "flagship": {
        "requests.cpu": "16", "requests.memory": "32Gi", "limits.memory": "64Gi",
        "pods": "100", "services": "10", "secrets": "50", "configmaps": "50",
        "persistentvolumeclaims": "4", "requests.storage": "50Gi",
        "services.loadbalancers": "0", "services.nodeports": "0",
    },
}

# PostgreSQL connections a site's role may hold at once (CONNECTION LIMIT), so one site
# cannot starve the shared server; the storefront pods' pools are sized to fit it.
PLAN_DB_CONNECTIONS: dict[str, int] = {"basic": 40, "flagship": 160}

PLAN_CONTAINER_LIMITS: dict[str, dict[str, dict[str, str]]] = {
    "basic": {
        "default": {"memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "max": {"cpu": "2", "memory": "4Gi"},
    },
    "flagship": {
        "default": {"memory": "1Gi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "max": {"cpu": "4", "memory": "8Gi"},
    },
}


def db_connection_limit(ctx: SiteContext) -> int:
    return PLAN_DB_CONNECTIONS[ctx.plan]


def db_pool_size(ctx: SiteContext) -> int:
    """Connections one storefront pod may pool: the plan's limit shared by the replicas
    plus the one extra pod of a rolling update."""
    return max(2, min(20, db_connection_limit(ctx) // (ctx.spec.storefront.replicas + 1)))


def namespace_ownership(live: dict[str, Any] | None, uid: str) -> str:
    """Whether the site's namespace may be used by the SubSite with ``uid``:
    ``create`` (absent), ``ours`` (marked with this uid), ``legacy`` (created by an
    operator version that did not mark yet: our managed-by label and an ownerReference
    to this very SubSite; marked by the next apply), ``terminating`` (another SubSite's,
    going away) or ``foreign``."""
    if live is None:
        return "create"
    md = live.get("metadata") or {}
    lbl = md.get("labels") or {}
    if lbl.get(SUBSITE_UID_LABEL) == uid:
        return "ours"
    if lbl.get(SUBSITE_UID_LABEL) is None and \
            lbl.get("app.kubernetes.io/managed-by") == MANAGED_BY and \
            any(r.get("uid") == uid for r in md.get("ownerReferences") or []):
        return "legacy"
    if md.get("deletionTimestamp") and lbl.get("app.kubernetes.io/managed-by") == MANAGED_BY:
        return "terminating"
    return "foreign"


def namespace(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ctx.namespace,
            "labels": {
                **labels(ctx),
                # The mark of ownership: nothing without it is adopted or deleted.
                SUBSITE_UID_LABEL: ctx.uid,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
            # The cluster-scoped SubSite owns the namespace, so deleting it lets garbage
            # collection remove everything inside even if the operator is gone.
            "ownerReferences": [owner_reference(ctx)],
        },
    }


def resource_quota(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": meta(ctx, "storefront-quota"),
        "spec": {"hard": dict(PLAN_QUOTAS[ctx.plan])},
    }


def limit_range(ctx: SiteContext) -> dict[str, Any]:
    limits = PLAN_CONTAINER_LIMITS[ctx.plan]
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": meta(ctx, "storefront-limits"),
        "spec": {"limits": [{"type": "Container", **{k: dict(v) for k, v in limits.items()}}]},
    }
