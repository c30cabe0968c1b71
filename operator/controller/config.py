"""Operator configuration: flags and environment, resolved once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kameng.contracts.pod import HQ_KEYS_SECRET
from kameng.notify.config import NotifyConfig


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class OperatorConfig:
    pg_admin_dsn: str = ""
    redis_url: str = ""
    namespace: str = "kameng-system"  # where the HQ keys live
    hq_keys_secret: str = HQ_KEYS_SECRET
    storefront_image: str = "ghcr.io/kameng/kameng:0.1.0"
    hq_url: str = "http://kameng-hq.kameng-system.svc"
    hq_public_url: str = ""  # HQ's pay pages for customers ("" = hq_url)
    ingress_class: str | None = None
    ingress_namespace: str = "ingress-nginx"
    monitoring_namespace: str | None = None  # Prometheus, allowed to the shops' ops port
    trusted_proxies: str = ""  # CIDRs of the ingress controller, for the shops' X-F-F
    # Host the storefront pods use to reach PostgreSQL/Redis; defaults to the admin's.
    pg_site_host: str | None = None
    redis_site_host: str | None = None
    # Several PostgreSQL servers to place sites on (kameng.provision.servers); without it
    # the one server of pg_admin_dsn, named "default".
    pg_servers_file: str | None = None
    resync_seconds: float = 300.0
    resync_jitter: float = 0.2
    workers: int = 16
    metrics_port: int = 8080
    kubeconfig: str | None = None
    # kopf peering: the ClusterKopfPeering name, or None to run standalone.
    peering: str | None = "kameng"
    peering_lifetime: int = 60  # seconds a silent peer counts as alive
    notify: NotifyConfig = field(default_factory=NotifyConfig)  # expiry notices
    # The exit: where archives go when no store Secret exists (a PVC mount in a cluster),
    # where they are assembled, and HQ's ledger (read-only, for the site's statements).
    export_dir: str = "/var/lib/kameng/exports"
    export_workdir: str | None = None
    export_store_secret: str = "kameng-export-store"  # noqa: S105 - a Secret's name
    hq_database_url: str = ""

    def __repr__(self) -> str:  # DSN and URL carry the admin passwords
        return (f"OperatorConfig(namespace={self.namespace!r}, workers={self.workers}, "
                f"resync={self.resync_seconds}s)")

    @classmethod
    def from_env(cls) -> OperatorConfig:
        e = os.environ
        return cls(
            pg_admin_dsn=e.get("KAMENG_PG_ADMIN_DSN", ""),
            redis_url=e.get("KAMENG_REDIS_URL", ""),
            namespace=e.get("KAMENG_NAMESPACE", "kameng-system"),
            storefront_image=e.get("KAMENG_STOREFRONT_IMAGE", cls.storefront_image),
            hq_url=e.get("KAMENG_HQ_URL", cls.hq_url),
            hq_public_url=e.get("KAMENG_HQ_PUBLIC_URL", cls.hq_public_url),
            ingress_class=e.get("KAMENG_INGRESS_CLASS") or None,
            ingress_namespace=e.get("KAMENG_INGRESS_NAMESPACE", "ingress-nginx"),
            monitoring_namespace=e.get("KAMENG_MONITORING_NAMESPACE") or None,
            trusted_proxies=e.get("KAMENG_TRUSTED_PROXIES", ""),
            pg_site_host=e.get("KAMENG_PG_SITE_HOST") or None,
            redis_site_host=e.get("KAMENG_REDIS_SITE_HOST") or None,
            pg_servers_file=e.get("KAMENG_PG_SERVERS_FILE") or None,
            resync_seconds=_env_float("KAMENG_RESYNC_SECONDS", 300.0),
            workers=int(e.get("KAMENG_WORKERS", "16")),
            metrics_port=int(e.get("KAMENG_METRICS_PORT", "8080")),
            notify=NotifyConfig.from_env(e),
            export_dir=e.get("KAMENG_EXPORT_DIR", cls.export_dir),
            export_workdir=e.get("KAMENG_EXPORT_WORKDIR") or None,
            export_store_secret=e.get("KAMENG_EXPORT_STORE_SECRET", cls.export_store_secret),
            hq_database_url=e.get("KAMENG_HQ_DATABASE_URL", ""),
        )
