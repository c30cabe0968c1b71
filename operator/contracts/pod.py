"""The pod contract between the operator and the storefront.

Everything the operator puts into a storefront pod and the storefront reads back: the
Secrets (name, keys, where each is mounted, which env var overrides it), the ConfigMap
holding the site config, and the plain env vars of the container. The operator's
builders write from this table, its controller reads existing Secrets through it, and
``kameng_storefront.config`` resolves settings from it; nobody spells a name twice.

Every secret value is a file ``<root>/<mount>/<key>`` under one mount root
(:data:`SECRETS_ROOT`, overridable with env ``KAMENG_SECRETS_ROOT``). The storefront
reads it from env ``<env>``, else from the file named by ``<env>_FILE``, else from that
mount. A site's Secrets mount under their own names; HQ's keys Secret, which lives in
the operator's namespace, mounts as ``hq``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["hq", "subsite"]
BOTH: tuple[Mode, ...] = ("hq", "subsite")

# --- mount roots and the plain env vars of the container -------------------------------
SECRETS_ROOT = "/etc/kameng/secrets"
CONFIG_DIR = "/etc/kameng/config"
SECRETS_ROOT_ENV = "KAMENG_SECRETS_ROOT"
MODE_ENV = "KAMENG_MODE"
PUBLIC_URL_ENV = "KAMENG_PUBLIC_URL"
SITE_CONFIG_ENV = "KAMENG_SITE_CONFIG"  # the JSON inline (tests, local runs)
SITE_CONFIG_FILE_ENV = "KAMENG_SITE_CONFIG_FILE"
# CIDRs of the reverse proxies (ingress controller) whose X-Forwarded-For is believed;
# comma-separated, default none: a client's own header never names its address.
TRUSTED_PROXIES_ENV = "KAMENG_TRUSTED_PROXIES"
OPS_PORT_ENV = "KAMENG_OPS_PORT"
DB_POOL_SIZE_ENV = "KAMENG_DB_POOL_SIZE"  # pool size within the role's CONNECTION LIMIT
# Worker processes of the storefront pod (`kameng storefront --workers`): about one per
# core of its CPU request; the pod's pool (DB_POOL_SIZE_ENV) is split between them.
WORKERS_ENV = "KAMENG_WORKERS"


# --- the container's ports -------------------------------------------------------------
@dataclass(frozen=True)
class Port:
    name: str
    number: int


#: The public app (shop pages, HQ API, payment notifications): the only port the
#: Service's ``http`` port and so the Ingress reach.
HTTP_PORT = Port("http", 8080)
#: Probes and Prometheus metrics, on a port of their own: the Service exposes it under
#: another name that the Ingress never routes to, and the NetworkPolicy admits the ingress
#: controller only to :data:`HTTP_PORT`. The public app answers 404 for these paths.
OPS_PORT = Port("ops", 9090)
HEALTHZ_PATH, READYZ_PATH, METRICS_PATH = "/healthz", "/readyz", "/metrics"

# --- the ConfigMap ------------------------------------------------------------------
CONFIGMAP_NAME = "storefront-config"
CONFIGMAP_KEY = "site.json"
DEFAULT_CONFIG_PATH = f"{CONFIG_DIR}/{CONFIGMAP_KEY}"

# --- the Secrets --------------------------------------------------------------------
DB_SECRET = "storefront-db"  # noqa: S105 - a Secret name
REDIS_SECRET = "storefront-redis"  # noqa: S105 - a Secret name
KEYS_SECRET = "storefront-keys"  # noqa: S105 - a Secret name
LICENSE_SECRET = "license"  # noqa: S105 - a Secret name
HQ_KEYS_SECRET = "kameng-hq-keys"  # noqa: S105 - a Secret name (operator namespace)
HQ_KEYS_MOUNT = "hq"

#: The Secrets the operator writes into every site namespace and mounts into its pods,
#: in mount order.
SITE_SECRETS: tuple[str, ...] = (DB_SECRET, REDIS_SECRET, KEYS_SECRET, LICENSE_SECRET)


def site_keys_copy(site: str) -> str:
    """The operator's copy of a site's ``storefront-keys`` in its own namespace (HQ reads
    the session secret there to mint a new partner's first invitation)."""
    return f"kameng-keys-{site}"


def mount_dir(secret: str) -> str:
    """Directory of Secret ``secret`` under the mount root."""
    return HQ_KEYS_MOUNT if secret == HQ_KEYS_SECRET else secret


def mount_path(secret: str, root: str = SECRETS_ROOT) -> str:
    return f"{root.rstrip('/')}/{mount_dir(secret)}"


@dataclass(frozen=True)
class SecretKey:
    """One key of one Secret, and how the storefront finds its value."""

    secret: str
    key: str
    env: str  # "": the storefront never reads it (the operator's own)
    modes: tuple[Mode, ...]
    doc: str
    # False: the operator never writes it; whoever deploys the storefront may add it.
    operator_writes: bool = True

    @property
    def relpath(self) -> str:
        """Path under the mount root."""
        return f"{mount_dir(self.secret)}/{self.key}"

    def path(self, root: str = SECRETS_ROOT) -> str:
        return f"{mount_path(self.secret, root)}/{self.key}"


DB_DSN = SecretKey(DB_SECRET, "dsn", "KAMENG_DATABASE_URL", BOTH,
                   "PostgreSQL DSN of the site's database")
REDIS_URL = SecretKey(REDIS_SECRET, "url", "KAMENG_REDIS_URL", BOTH,
                      "Redis URL (ACL user limited to the site's keys)")
SESSION_SECRET = SecretKey(KEYS_SECRET, "session-secret", "KAMENG_SESSION_SECRET", BOTH,
                           "secret signing session cookies")
DATA_KEYS = SecretKey(KEYS_SECRET, "data-key", "KAMENG_DATA_KEYS", BOTH,
                      "AES-256-GCM data keys: 'kid:base64(32 bytes)', comma-separated, "
                      "first = current")
HQ_API_TOKEN = SecretKey(KEYS_SECRET, "hq-api-token", "KAMENG_HQ_API_TOKEN", ("subsite",),
                         "per-site token for HQ's fulfilment API")
# HQ only: sub-site members have no shared bootstrap password; each gets a one-time
# invitation (kameng.contracts.invitation) and chooses their own.
ADMIN_PASSWORD = SecretKey(KEYS_SECRET, "admin-password", "KAMENG_ADMIN_PASSWORD", ("hq",),
                           "bootstrap password of HQ's admin account, to be replaced at "
                           "its first login", operator_writes=False)
LICENSE_TOKEN = SecretKey(LICENSE_SECRET, "token", "KAMENG_LICENSE_TOKEN", ("subsite",),
                          "Ed25519-signed license token")
HQ_SIGNING_KEY = SecretKey(HQ_KEYS_SECRET, "signing-key.pem", "", (),
                           "HQ's Ed25519 license-signing key (PEM); the operator's alone")
HQ_PUBLIC_KEY = SecretKey(HQ_KEYS_SECRET, "public-key", "KAMENG_HQ_PUBLIC_KEY", ("hq",),
                          "HQ's license-verifying public key (base64)")
HQ_MASTER_SECRET = SecretKey(HQ_KEYS_SECRET, "master-secret", "KAMENG_HQ_MASTER_SECRET",
                             ("hq",), "HQ's master secret (card-key fingerprints)")

#: The whole table.
SECRET_KEYS: tuple[SecretKey, ...] = (
    DB_DSN, REDIS_URL, SESSION_SECRET, DATA_KEYS, HQ_API_TOKEN, ADMIN_PASSWORD, LICENSE_TOKEN,
    HQ_SIGNING_KEY, HQ_PUBLIC_KEY, HQ_MASTER_SECRET,
)


def keys_of(secret: str, *, written_by_operator: bool = True) -> tuple[SecretKey, ...]:
    """The keys of Secret ``secret`` (by default only those the operator writes)."""
    return tuple(k for k in SECRET_KEYS
                 if k.secret == secret and (k.operator_writes or not written_by_operator))


def by_env() -> dict[str, SecretKey]:
    """Env var → key, for every key the storefront reads."""
    return {k.env: k for k in SECRET_KEYS if k.env}
