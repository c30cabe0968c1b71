"""The application's state, typed: what every route, service and background loop reaches.

Built by :func:`kameng_storefront.app.create_app`; the connections (``pool``, ``redis``,
``http``, ``payments``) are opened by the app's lifespan, so they exist while it serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from .config import Settings
from .crypto import DataCipher
from .web.license_guard import LicenseGuard, Mode
from .web.metrics import Metrics
from .web.page_cache import PageCache, SharedCounter
from .web.throttle import FailureThrottle
from .web.visit_tally import VisitTally

if TYPE_CHECKING:
    import httpx
    import redis.asyncio as aioredis
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from psycopg_pool import AsyncConnectionPool

    from kameng.kube.client import Kube

    from .hq.credentials import CredentialRegistry
    from .shop.hq_client import HqClient
    from .shop.payments import PaymentProvider

__all__ = ["AppState", "KubeUnavailable", "state_of"]


class KubeUnavailable(RuntimeError):
    """HQ has no way to the Kubernetes API (no ServiceAccount, no kubeconfig setting)."""


@dataclass
class AppState:
    settings: Settings
    cipher: DataCipher
    metrics: Metrics = field(default_factory=Metrics)
    throttle: FailureThrottle = field(init=False)  # per site: its keys carry the site
    # Sub-site: the offline license guard. HQ has none (it is always "normal").
    license: LicenseGuard | None = None
    # HQ: the public keys that verify sub-sites' license tokens (several during rotation).
    license_keys: list[Ed25519PublicKey] = field(default_factory=list)
    # HQ: the site-credential registry sub-sites' API tokens are checked against.
    credentials: CredentialRegistry | None = None
    # HQ: THE Kubernetes client (onboarding, approvals, renewals, plans), made on first
    # use by kube_client(); closed by the app's lifespan.
    kube: Kube | None = None
    pool: AsyncConnectionPool = field(init=False)
    redis: aioredis.Redis = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    hq: HqClient = field(init=False)  # sub-site only
    payments: PaymentProvider = field(init=False)  # sub-site only
    # Sub-site: rendered catalogue pages, valid until a catalogue sync or an announcement
    # bumps the pod-wide counter (shared by the pod's worker processes).
    pages: PageCache = field(default_factory=lambda: PageCache(SharedCounter()))
    # Sub-site: this worker's page views not yet added to Redis (shop.kpis).
    visits: VisitTally = field(default_factory=VisitTally)

    @property
    def site(self) -> str:
        return self.settings.site.site

    def effective_mode(self) -> Mode:
        return "normal" if self.license is None else self.license.mode()

    def kube_client(self) -> Kube:
        """HQ's one Kubernetes client (kameng.kube.client), made on first use: its
        ServiceAccount in a cluster, else ``settings.kubeconfig``. Raises
        :class:`KubeUnavailable` when HQ has neither: never falls back to a developer's
        ``KUBECONFIG``, which would act with that person's rights instead of HQ's."""
        if self.kube is None:
            from kameng.kube.client import SA_DIR, Kube

            path = self.settings.kubeconfig
            if not path and not (SA_DIR / "token").exists():
                raise KubeUnavailable("no ServiceAccount and no KAMENG_HQ_KUBECONFIG")
            self.kube = Kube.from_environment(path, counted=False)
        return self.kube

    def guard(self) -> LicenseGuard:
        """The sub-site's license guard (a programming error to ask for it on HQ)."""
        if self.license is None:
            raise RuntimeError("no license guard in HQ mode")
        return self.license


def state_of(owner: HTTPConnection | Starlette) -> AppState:
    """The one accessor: from a request (routes) or from the app (tests, middleware)."""
    app = owner if isinstance(owner, Starlette) else owner.app
    return app.state.kameng
