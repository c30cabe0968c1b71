"""Storefront settings: the site-config contract plus secrets, from env or files.

Every secret is read from its env var ``X``, else from the file named by env ``X_FILE``,
else from its default mount under ``KAMENG_SECRETS_ROOT`` (default
``/etc/kameng/secrets``), so the operator's ConfigMap and Secrets drive the app unchanged.
The table of env vars, Secrets, keys, mount paths and the modes that read each is the
pod contract, :data:`kameng.contracts.pod.SECRET_KEYS`; the site config comes from
``KAMENG_SITE_CONFIG`` (inline) or ``KAMENG_SITE_CONFIG_FILE`` (default: the ConfigMap's
mount, :data:`kameng.contracts.pod.DEFAULT_CONFIG_PATH`).

Plain settings: ``KAMENG_MODE`` (hq|subsite), ``KAMENG_PUBLIC_URL`` (this app's public
base URL, used in payment return/notify URLs), ``KAMENG_HQ_URL`` (overrides ``hqUrl``),
``KAMENG_CATALOG_SYNC_SECONDS`` (default 5),
``KAMENG_MIN_WITHDRAWAL`` (decimal, default ``100.00``), ``KAMENG_PII_PEPPER``,
``KAMENG_LICENSE_RECHECK_SECONDS`` (default 5), ``KAMENG_DB_POOL_SIZE`` (default 20),
``KAMENG_TRUSTED_PROXIES`` (CIDRs of the reverse proxies whose X-Forwarded-For is believed,
comma-separated; default none), ``KAMENG_MAX_BODY_BYTES`` (largest request body, default
1 MiB; larger ones get 413) and ``KAMENG_MAX_UPLOAD_BYTES`` (the same for the staff upload
forms, HQ's card-key CSV import; default 16 MiB).

HQ mode checks sub-sites' API tokens against the site-credential registry mounted at
``<secrets root>/site-credentials`` (``KAMENG_SITE_CREDENTIALS_DIR`` overrides; see
:mod:`kameng.contracts.hq_auth`) and verifies license tokens with ``KAMENG_HQ_PUBLIC_KEY``
(PEM or base64, several comma-separated for rotation; default: ``hqPublicKey`` of the
site config).

Money: ``KAMENG_SANDBOX_PAYMENTS`` (HQ): ``enabled`` runs the sandbox payment channel, whose
pay page confirms a payment with one unauthenticated click; anything but ``enabled`` or
``disabled`` (the default) is refused, so a production install never runs it by accident.
``KAMENG_DELIVERY_SWEEP_SECONDS`` (default 10): how often a shop re-drives paid orders;
``KAMENG_DELIVERY_RETRY_SECONDS`` (default 5, doubling up to 600) and
``KAMENG_DELIVERY_MAX_ATTEMPTS`` (default 12, about 50 minutes): transient delivery failures
are retried that often, then the buyer is refunded.


Onboarding (HQ): ``KAMENG_ONBOARDING_MODE`` (``kubernetes``, the default: approving an
application creates the License and SubSite with HQ's ServiceAccount; ``gitops``: it
produces the YAML bundle to commit instead), ``KAMENG_ONBOARDING_ROLEPOLICY`` (default
``standard``), ``KAMENG_ONBOARDING_OWNER_ROLE`` (default ``site-admin``),
``KAMENG_NAMESPACE`` (HQ's namespace, default ``kameng-system``).
The public ``/apply`` form takes at most ``KAMENG_APPLY_PER_CLIENT_PER_HOUR`` (default 10)
submissions per client address and ``KAMENG_APPLY_PER_HOUR`` (default 300) in all;
a pending application older than ``KAMENG_ONBOARDING_EXPIRY_DAYS`` (default 30) is expired
by a sweep every ``KAMENG_ONBOARDING_SWEEP_SECONDS`` (default 3600), freeing its name.
A shop asks HQ about its withdrawals and refunds held for approval every
``KAMENG_APPROVALS_POLL_SECONDS`` (default 10).

HQ's way to the Kubernetes API (onboarding, approvals, renewals, plan promotion): its
ServiceAccount in a cluster, else the ONE setting ``KAMENG_HQ_KUBECONFIG``. A developer's
``KUBECONFIG`` is deliberately not used: HQ must act as its own least-privilege identity,
never as whoever happens to have started it. The capability switches (e.g.
``KAMENG_HQ_RENEWALS=enabled``) stay separate.

``KAMENG_DATA_KEYS`` is ``kid:base64(32 bytes)[,kid:base64...]``; the first key encrypts,
all decrypt (rotation). ``KAMENG_ADMIN_PASSWORD`` (HQ mode only) bootstraps the password
of HQ's ``admin`` account, which must replace it at first login; sub-site members have no
bootstrap password: each redeems an invitation (``kubectl kameng invite``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kameng.contracts import pod
from kameng.contracts.hq_auth import REGISTRY_DIR_ENV, REGISTRY_MOUNT
from kameng.contracts.money import to_fen
from kameng.contracts.siteconfig import SiteConfig, SiteConfigError, load_site_config

from .web.forwarded import Network, parse_networks

Mode = pod.Mode

# Env var → the contract's entry, whose mount is the default file.
_DEFAULT_FILES = pod.by_env()


class ConfigError(RuntimeError):
    """Missing or invalid setting. Names the setting, never its value."""


def read_secret(name: str, env: Mapping[str, str], required: bool = True) -> str | None:
    """Value of secret ``name`` from env, ``<name>_FILE`` or its default mount."""
    value = env.get(name)
    if value:
        return value.strip()
    path = secret_path(name, env)
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8").strip()
    if required:
        raise ConfigError(f"setting {name} is missing (env {name} or file {name}_FILE)")
    return None


def secret_path(name: str, env: Mapping[str, str]) -> str | None:
    """File a secret is read from, if it is file-based (so it can be re-read on change)."""
    if env.get(name):
        return None
    path = env.get(f"{name}_FILE")
    if not path and name in _DEFAULT_FILES:
        path = _DEFAULT_FILES[name].path(env.get(pod.SECRETS_ROOT_ENV, pod.SECRETS_ROOT))
    return path


@dataclass(frozen=True)
class Settings:
    mode: Mode
    site: SiteConfig
    database_url: str
    redis_url: str
    session_secret: str
    data_keys: str
    public_url: str
    hq_url: str = ""
    # HQ's public URL: where a customer's browser reaches HQ's pay pages (the site's pay
    # links); see ``pay_base``.
    hq_public_url: str = ""
    license_token: str | None = None
    license_token_file: str | None = None
    hq_api_token: str = ""
    hq_master_secret: str = ""
    hq_public_key: str = ""
    # HQ: the mounted site-credential registry (one file per site).
    site_credentials_dir: str = ""
    admin_password: str | None = None
    catalog_sync_seconds: float = 5.0
    license_recheck_seconds: float = 5.0
    pool_size: int = 20
    min_withdrawal_fen: int = 10000
    pii_pepper: bytes = b""
    sandbox_payments: bool = False
    delivery_sweep_seconds: float = 10.0
    delivery_retry_seconds: float = 5.0
    delivery_max_attempts: int = 12
    trusted_proxies: tuple[Network, ...] = ()
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 16 << 20
    # HQ: what approving a partner application does (``kubernetes``: create the License
    # and SubSite through the API; ``gitops``: hand out the YAML bundle to commit), the
    # RolePolicy new sites reference, the role their owner gets, HQ's namespace (where
    # the operator keeps each site's key copy).
    onboarding_mode: str = "kubernetes"
    onboarding_rolepolicy: str = "standard"
    onboarding_owner_role: str = "site-admin"
    namespace: str = "kameng-system"
    # HQ: the one kubeconfig for every HQ capability that talks to the Kubernetes API
    # (onboarding, approvals, renewals, plans) outside a cluster; None: the in-cluster
    # ServiceAccount, or no API at all (see AppState.kube_client).
    kubeconfig: str | None = None
    # HQ: submissions of the public /apply form per client address and in all, per hour
    # (a flood would bury the reviewers' queue and squat names), and how long a pending
    # application may hold its site name and domain before the sweep expires it.
    # Sub-site: how often it asks HQ about its withdrawals and refunds held for approval.
    approvals_poll_seconds: float = 10.0
    apply_per_client_per_hour: int = 10
    apply_per_hour: int = 300
    application_expiry_days: float = 30.0
    onboarding_sweep_seconds: float = 3600.0
    # HQ: the token ``kubectl kameng approvals|approve|reject`` present (empty: that API is off).
    admin_api_token: str = ""
    # KPIs: how often HQ refreshes its KPI and ticket-SLA gauges and a shop reports its
    # visits and customers to HQ.
    kpi_seconds: float = 30.0
    extra: dict[str, str] = field(default_factory=dict)
    # HQ: the renewal page (patches Licenses; see hq/renewals.py). Off unless enabled.
    renewals_enabled: bool = False

    @property
    def pay_base(self) -> str:
        """Where the site's pay links point: HQ's public URL, else HQ's own (a dev
        environment, where both are loopback)."""
        return self.hq_public_url or self.hq_url

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(mode={self.mode!r}, site={self.site.site!r}, url={self.public_url!r})"


SANDBOX_PAYMENTS_ENV = "KAMENG_SANDBOX_PAYMENTS"
HQ_KUBECONFIG_ENV = "KAMENG_HQ_KUBECONFIG"


def sandbox_enabled(env: Mapping[str, str]) -> bool:
    """Only the exact word ``enabled`` turns the sandbox on: ``true``/``1``/typos are refused
    rather than guessed, because guessing wrong either way is a production incident."""
    value = env.get(SANDBOX_PAYMENTS_ENV, "").strip().lower()
    if value not in ("", "enabled", "disabled"):
        raise ConfigError(f"{SANDBOX_PAYMENTS_ENV} must be 'enabled' or 'disabled'")
    return value == "enabled"


def load_settings(mode: Mode | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    mode = mode or env.get(pod.MODE_ENV, "subsite")  # type: ignore[assignment]
    if mode not in ("hq", "subsite"):
        raise ConfigError("KAMENG_MODE must be hq or subsite")
    try:
        site = load_site_config(env=env)
    except SiteConfigError:
        if mode != "hq":
            raise
        site = SiteConfig(site="hq", display_name="HQ")  # HQ may run without a site config
    sub = mode == "subsite"
    return Settings(
        mode=mode,
        site=site,
        database_url=read_secret(pod.DB_DSN.env, env) or "",
        redis_url=read_secret(pod.REDIS_URL.env, env) or "",
        session_secret=read_secret(pod.SESSION_SECRET.env, env) or "",
        data_keys=read_secret(pod.DATA_KEYS.env, env) or "",
        public_url=env.get(pod.PUBLIC_URL_ENV, "http://127.0.0.1:8080").rstrip("/"),
        hq_url=(env.get("KAMENG_HQ_URL") or site.hq_url).rstrip("/"),
        hq_public_url=(env.get("KAMENG_HQ_PUBLIC_URL") or site.hq_public_url).rstrip("/"),
        # Inline token only; a file-mounted token is read (and re-read) by the LicenseGuard.
        license_token=(env.get(pod.LICENSE_TOKEN.env) or None) if sub else None,
        license_token_file=secret_path(pod.LICENSE_TOKEN.env, env) if sub else None,
        hq_api_token=(read_secret(pod.HQ_API_TOKEN.env, env) or "") if sub else "",
        hq_master_secret=(read_secret(pod.HQ_MASTER_SECRET.env, env) or "") if not sub else "",
        site_credentials_dir=(env.get(REGISTRY_DIR_ENV) or pod.mount_path(
            REGISTRY_MOUNT, env.get(pod.SECRETS_ROOT_ENV, pod.SECRETS_ROOT))) if not sub else "",
        hq_public_key=read_secret(pod.HQ_PUBLIC_KEY.env, env, required=False)
        or site.hq_public_key,
        admin_password=read_secret(pod.ADMIN_PASSWORD.env, env, required=False)
        if not sub else None,
        catalog_sync_seconds=float(env.get("KAMENG_CATALOG_SYNC_SECONDS", "5")),
        license_recheck_seconds=float(env.get("KAMENG_LICENSE_RECHECK_SECONDS", "5")),
        pool_size=int(env.get(pod.DB_POOL_SIZE_ENV, "20")),
        min_withdrawal_fen=to_fen(env.get("KAMENG_MIN_WITHDRAWAL", "100.00")),
        pii_pepper=env.get("KAMENG_PII_PEPPER", "").encode(),
        sandbox_payments=sandbox_enabled(env),
        delivery_sweep_seconds=float(env.get("KAMENG_DELIVERY_SWEEP_SECONDS", "10")),
        delivery_retry_seconds=float(env.get("KAMENG_DELIVERY_RETRY_SECONDS", "5")),
        delivery_max_attempts=int(env.get("KAMENG_DELIVERY_MAX_ATTEMPTS", "12")),
        trusted_proxies=_networks(env.get(pod.TRUSTED_PROXIES_ENV, "")),
        max_body_bytes=_positive_int(env, "KAMENG_MAX_BODY_BYTES", 1 << 20),
        max_upload_bytes=_positive_int(env, "KAMENG_MAX_UPLOAD_BYTES", 16 << 20),
        renewals_enabled=not sub and env.get("KAMENG_HQ_RENEWALS", "") == "enabled",
        onboarding_mode=_onboarding_mode(env),
        onboarding_rolepolicy=env.get("KAMENG_ONBOARDING_ROLEPOLICY", "standard"),
        onboarding_owner_role=env.get("KAMENG_ONBOARDING_OWNER_ROLE", "site-admin"),
        namespace=env.get("KAMENG_NAMESPACE", "kameng-system"),
        kubeconfig=(env.get(HQ_KUBECONFIG_ENV) or None) if not sub else None,
        admin_api_token=(read_secret("KAMENG_HQ_ADMIN_TOKEN", env, required=False) or "")
        if not sub else "",
        kpi_seconds=float(env.get("KAMENG_KPI_SECONDS", "30")),
        approvals_poll_seconds=_positive_float(env, "KAMENG_APPROVALS_POLL_SECONDS", 10.0),
        apply_per_client_per_hour=_positive_int(env, "KAMENG_APPLY_PER_CLIENT_PER_HOUR", 10,
                                                "a whole number"),
        apply_per_hour=_positive_int(env, "KAMENG_APPLY_PER_HOUR", 300, "a whole number"),
        application_expiry_days=_positive_float(env, "KAMENG_ONBOARDING_EXPIRY_DAYS", 30.0),
        onboarding_sweep_seconds=_positive_float(env, "KAMENG_ONBOARDING_SWEEP_SECONDS",
                                                 3600.0),
    )


ONBOARDING_MODES = ("kubernetes", "gitops")


def _onboarding_mode(env: Mapping[str, str]) -> str:
    value = env.get("KAMENG_ONBOARDING_MODE", "kubernetes").strip().lower()
    if value not in ONBOARDING_MODES:
        raise ConfigError("KAMENG_ONBOARDING_MODE must be 'kubernetes' or 'gitops'")
    return value


def _networks(spec: str) -> tuple[Network, ...]:
    try:
        return parse_networks(spec)
    except ValueError as exc:
        raise ConfigError(f"{pod.TRUSTED_PROXIES_ENV}: {exc}") from None


def _positive_int(env: Mapping[str, str], name: str, default: int,
                  what: str = "a whole number of bytes") -> int:
    try:
        value = int(env.get(name, str(default)))
    except ValueError:
        raise ConfigError(f"{name} must be {what}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, str(default)))
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be positive")
    return value
