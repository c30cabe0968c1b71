"""Deployment, Service and PodDisruptionBudget of the storefront."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from kameng.contracts import pod

from .context import APP_NAME, SITE_LABEL, SiteContext, labels, meta
from .namespace import db_pool_size

CHECKSUM_ANNOTATION = "kameng.io/config-checksum"
RUN_AS = 10001


def selector(ctx: SiteContext) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP_NAME, SITE_LABEL: ctx.name}


def config_checksum(objects: Iterable[dict[str, Any]]) -> str:
    """Checksum over the data of the ConfigMap and Secrets the pods read, so that a
    change of any of them changes the pod template and rolls the Deployment."""
    payload = sorted(
        (o["kind"], o["metadata"]["name"], json.dumps(o.get("data", {}), sort_keys=True))
        for o in objects
    )
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": pod.CONFIGMAP_NAME}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": pod.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    for name in pod.SITE_SECRETS:
        vol = f"secret-{name}"
        volumes.append({"name": vol, "secret": {"secretName": name, "defaultMode": 0o440}})
        mounts.append({"name": vol, "mountPath": pod.mount_path(name),
                       "readOnly": True})
    return volumes, mounts


MAX_WORKERS = 8


def storefront_workers(cpu: str) -> int:
    """Worker processes for a pod requesting ``cpu`` (a Kubernetes quantity: "500m", "2",
    "1.5"): one Python process uses one core, so one per whole core requested, at least
    one; an unreadable quantity gets one (the API server already accepted it)."""
    try:
        cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    except ValueError:
        return 1
    return max(1, min(MAX_WORKERS, int(cores + 0.25)))


def _probe(path: str, period: int) -> dict[str, Any]:
    # The ops port: probes and metrics are never on the public one (Ingress → "http").
    return {"httpGet": {"path": path, "port": pod.OPS_PORT.name}, "periodSeconds": period,
            "timeoutSeconds": 2, "failureThreshold": 3}


def deployment(ctx: SiteContext, checksum: str) -> dict[str, Any]:
    sf = ctx.spec.storefront
    volumes, mounts = _volumes()
    container = {
        "name": APP_NAME,
        "image": sf.image or ctx.platform.storefront_image,
        "command": ["kameng", "storefront"],
        "ports": [
            {"name": p.name, "containerPort": p.number, "protocol": "TCP"}
            for p in (pod.HTTP_PORT, pod.OPS_PORT)
        ],
        "env": [
            {"name": pod.MODE_ENV, "value": "subsite"},
            {"name": pod.OPS_PORT_ENV, "value": str(pod.OPS_PORT.number)},
            {"name": pod.TRUSTED_PROXIES_ENV, "value": ctx.platform.trusted_proxies},
            {"name": pod.PUBLIC_URL_ENV, "value": ctx.url},
            {"name": pod.SITE_CONFIG_FILE_ENV, "value": pod.DEFAULT_CONFIG_PATH},
            {"name": pod.SECRETS_ROOT_ENV, "value": pod.SECRETS_ROOT},
            # Within the role's CONNECTION LIMIT (children.namespace.PLAN_DB_CONNECTIONS).
            {"name": pod.DB_POOL_SIZE_ENV, "value": str(db_pool_size(ctx))},
            {"name": pod.WORKERS_ENV, "value": str(storefront_workers(sf.resources.cpu))},
        ],
        "resources": {
            "requests": {"cpu": sf.resources.cpu, "memory": sf.resources.memory},
            "limits": {"memory": sf.resources.memory},
        },
        "readinessProbe": _probe(pod.READYZ_PATH, 5),
        "livenessProbe": _probe(pod.HEALTHZ_PATH, 10),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(ctx, APP_NAME, APP_NAME),
        "spec": {
            "replicas": sf.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(ctx)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels(ctx, APP_NAME),
                    "annotations": {CHECKSUM_ANNOTATION: checksum},
                },
                "spec": {
                    "serviceAccountName": APP_NAME,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(ctx, APP_NAME, APP_NAME),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ctx),
            # The Ingress routes only "http"; "ops" (probes, metrics) is for in-cluster
            # scrapers, and the NetworkPolicy keeps the ingress controller off it.
            "ports": [
                {"name": pod.HTTP_PORT.name, "port": 80, "targetPort": pod.HTTP_PORT.name,
                 "protocol": "TCP"},
                {"name": pod.OPS_PORT.name, "port": pod.OPS_PORT.number,
                 "targetPort": pod.OPS_PORT.name, "protocol": "TCP"},
            ],
        },
    }


def pod_disruption_budget(ctx: SiteContext) -> dict[str, Any]:
    # maxUnavailable rather than minAvailable: with one replica, minAvailable=1 would
    # block every node drain forever.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(ctx, APP_NAME, APP_NAME),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(ctx)}},
    }
