"""Ingress: the shop's public host, with TLS from a Secret or a cert-manager issuer."""

from __future__ import annotations

from typing import Any

from kameng.contracts import pod

from .context import APP_NAME, SiteContext, meta

ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"
ISSUED_SECRET = "storefront-tls"  # noqa: S105 - a Secret name


def ingress(ctx: SiteContext) -> dict[str, Any]:
    spec = ctx.spec
    md = meta(ctx, APP_NAME, APP_NAME)
    body: dict[str, Any] = {
        "rules": [{
            "host": spec.domain,
            "http": {"paths": [{
                "path": "/",
                "pathType": "Prefix",
                # Only the public port: probes and metrics ("ops") stay in the cluster.
                "backend": {"service": {"name": APP_NAME,
                                        "port": {"name": pod.HTTP_PORT.name}}},
            }]},
        }],
    }
    if ctx.platform.ingress_class:
        body["ingressClassName"] = ctx.platform.ingress_class
    if spec.tls and ctx.own_tls:  # the site's own certificate is a plan feature
        if spec.tls.cluster_issuer:
            md["annotations"] = {ISSUER_ANNOTATION: spec.tls.cluster_issuer}
        body["tls"] = [{"hosts": [spec.domain],
                        "secretName": spec.tls.secret_name or ISSUED_SECRET}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": md,
            "spec": body}
