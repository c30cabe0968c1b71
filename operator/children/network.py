"""NetworkPolicies: deny everything, then allow exactly what the storefront needs."""

from __future__ import annotations

import ipaddress
from typing import Any

from kameng.contracts import pod

from .context import APP_NAME, SiteContext, meta

STOREFRONT_PORT = pod.HTTP_PORT.number  # the ingress controller reaches only this one


def _peer_for(host: str) -> list[dict[str, Any]]:
    """An ipBlock when the backing service is addressed by IP; otherwise any destination
    on that port (a DNS name cannot be expressed in a NetworkPolicy)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return []
    prefix = 32 if ip.version == 4 else 128
    return [{"ipBlock": {"cidr": f"{ip}/{prefix}"}}]


def _egress(host: str, port: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    peers = _peer_for(host)
    if peers:
        rule["to"] = peers
    return rule


def default_deny(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(ctx, "default-deny"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def storefront_allow(ctx: SiteContext) -> dict[str, Any]:
    p = ctx.platform
    ns_label = "kubernetes.io/metadata.name"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(ctx, "storefront"),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": APP_NAME}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {ns_label: p.ingress_namespace}}}],
                "ports": [{"protocol": "TCP", "port": STOREFRONT_PORT}],
            }, *([{
                # Prometheus scrapes /metrics on the ops port (the chart's PodMonitor), and
                # only that port: the public one stays the ingress controller's.
                "from": [{"namespaceSelector": {
                    "matchLabels": {ns_label: p.monitoring_namespace}}}],
                "ports": [{"protocol": "TCP", "port": pod.OPS_PORT.number}],
            }] if p.monitoring_namespace else [])],
            "egress": [
                {
                    "to": [{
                        "namespaceSelector": {"matchLabels": {ns_label: "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {
                    "to": [{"namespaceSelector": {"matchLabels": {ns_label: p.hq_namespace}}}],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                },
                _egress(p.postgres_host, p.postgres_port),
                _egress(p.redis_host, p.redis_port),
            ],
        },
    }


def network_policies(ctx: SiteContext) -> list[dict[str, Any]]:
    return [default_deny(ctx), storefront_allow(ctx)]
