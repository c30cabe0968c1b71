"""Everything a builder needs about one sub-site, resolved before building."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from kameng.api.common import API_VERSION
from kameng.api.license import LicenseSpec
from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.contracts.plans import plan_allows

MANAGED_BY = "kameng"
SITE_LABEL = "kameng.io/subsite"
NAMESPACE_PREFIX = "kameng-"
APP_NAME = "storefront"


def namespace_name(site: str) -> str:
    return f"{NAMESPACE_PREFIX}{site}"


@dataclass(frozen=True)
class Platform:
    """Operator-wide settings that shape every site's children."""

    storefront_image: str = "ghcr.io/kameng/kameng:0.1.0"
    hq_url: str = "http://kameng-hq.kameng-system.svc"
    hq_public_url: str = ""  # where customers reach HQ's pay pages ("" = hq_url)
    hq_public_key: str = ""
    hq_namespace: str = "kameng-system"
    ingress_class: str | None = None
    # Namespace of the ingress controller, allowed to reach the storefront pods.
    ingress_namespace: str = "ingress-nginx"
    # Namespace of the Prometheus that scrapes the shops' ops port (None: no scraping
    # allowed through the NetworkPolicy).
    monitoring_namespace: str | None = None
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    # CIDRs of the ingress controller's pods, whose X-Forwarded-For the shops believe
    # (comma-separated; empty: none, every client is the TCP peer).
    trusted_proxies: str = ""


@dataclass(frozen=True)
class SiteSecrets:
    """Credentials and keys of one site. Only ever written into the site's Secrets."""

    db_dsn: str = ""
    redis_url: str = ""
    session_secret: str = ""
    data_key: str = ""
    hq_api_token: str = ""
    license_token: str = ""

    def __repr__(self) -> str:  # keep credentials out of logs and tracebacks
        return "SiteSecrets(<redacted>)"


@dataclass(frozen=True)
class SiteContext:
    name: str
    uid: str
    spec: SubSiteSpec
    license: LicenseSpec | None = None
    role_policy: RolePolicySpec | None = None
    mode: str = "suspended"
    platform: Platform = field(default_factory=Platform)
    secrets: SiteSecrets = field(default_factory=SiteSecrets)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def namespace(self) -> str:
        return namespace_name(self.name)

    @property
    def plan(self) -> str:
        return self.license.plan if self.license else "basic"

    @property
    def own_tls(self) -> bool:
        """Whether the Ingress carries the site's own TLS: asked for (``spec.tls``) and a
        feature of its plan (:mod:`kameng.contracts.plans`). Without the License (invalid
        or not seen yet) what was asked for stands rather than flap (the shop is closed)."""
        return self.spec.tls is not None and (
            self.license is None or plan_allows(self.license.plan, "custom_domain"))

    @property
    def url(self) -> str:
        scheme = "https" if self.own_tls else "http"
        return f"{scheme}://{self.spec.domain}"


def labels(ctx: SiteContext, component: str | None = None) -> dict[str, str]:
    """Labels of every child. Never copied from the parent: Argo CD tracks by label and
    would otherwise count the children as part of the SubSite's application."""
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, SITE_LABEL: ctx.name}
    if component:
        out["app.kubernetes.io/name"] = component
    return out


def owner_reference(ctx: SiteContext) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": "SubSite",
        "name": ctx.name,
        "uid": ctx.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def meta(ctx: SiteContext, name: str, component: str | None = None) -> dict[str, object]:
    return {"name": name, "namespace": ctx.namespace, "labels": labels(ctx, component)}
