"""All children of one SubSite, in the order they are applied."""

from __future__ import annotations

from typing import Any

from .config import config_map
from .context import SiteContext
from .ingress import ingress
from .namespace import limit_range, namespace, resource_quota
from .network import network_policies
from .rbac import member_rbac, service_account
from .secrets import secrets
from .workload import config_checksum, deployment, pod_disruption_budget, service


def build_children(ctx: SiteContext) -> list[dict[str, Any]]:
    """Namespace first (everything else lives in it), the Deployment after the config
    and Secrets it mounts, so a new pod never starts against missing volumes."""
    cfg = config_map(ctx)
    secs = secrets(ctx)
    return [
        namespace(ctx),
        resource_quota(ctx),
        limit_range(ctx),
        *network_policies(ctx),
        service_account(ctx),
        *member_rbac(ctx),
        cfg,
        *secs,
        deployment(ctx, config_checksum([cfg, *secs])),
        service(ctx),
        ingress(ctx),
        pod_disruption_budget(ctx),
    ]
