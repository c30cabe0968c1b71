"""Per-site authentication to HQ's API, and the registry HQ checks it against.

* The operator mints a random API token per site (:func:`new_site_api_token`) and keeps it
  only in the site's Secret ``storefront-keys`` (key ``hq-api-token``, pod contract).
* It publishes what HQ needs to check that token, never the token itself, in the
  **site-credential registry**: the Secret :data:`REGISTRY_SECRET` in the operator's
  namespace, one key per site (the site name) whose value is a :class:`SiteCredential`
  as JSON: the token's SHA-256, when it was minted, its state, the rotation request it
  answers, and the site's registered public URLs.
* HQ mounts that Secret as a directory (:data:`REGISTRY_MOUNT` under the secrets root; the
  kubelet swaps its files atomically) and re-reads a site's file whenever it changes, so
  HQ needs no Kubernetes access and holds no site's token. A site without a file, or with
  another token, is refused; ``suspended`` lets the site only refund (money back to its
  buyers), nothing else.
* Payment notifications from HQ to the site are signed with :func:`notification_key` of the
  token's digest: HQ can compute it from the registry, the site from its token, and
  whoever reads the registry still cannot call HQ as the site.
* Pay links (a customer's way from the site to HQ's pay page, no site → HQ call) are
  signed with :func:`payment_link_key`, derived the same way under another label: whoever
  reads the registry could open payments for the site's orders (which only customers'
  money completes, and the site checks the amount of) but not spend the site's token.

Revocation: the operator marks a suspended site ``suspended`` and deletes a deleted site's
entry; rotation (``kubectl kameng rotate-credentials``) mints a new token for one site and
replaces its entry, leaving every other site's alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "REGISTRY_DIR_ENV",
    "REGISTRY_MOUNT",
    "REGISTRY_SECRET",
    "CredentialError",
    "CredentialState",
    "SiteCredential",
    "new_site_api_token",
    "notification_key",
    "payment_link_key",
    "token_digest",
    "valid_site_name",
]

REGISTRY_SECRET = "kameng-site-credentials"  # noqa: S105 - a Secret name
REGISTRY_MOUNT = "site-credentials"  # directory under HQ's secrets root
REGISTRY_DIR_ENV = "KAMENG_SITE_CREDENTIALS_DIR"

CredentialState = Literal["active", "suspended"]
# A site name is a DNS label (the SubSite's name): safe as a Secret key and a file name.
_SITE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class CredentialError(ValueError):
    """A registry entry that cannot be read (never names the token)."""


def valid_site_name(site: str) -> bool:
    return bool(_SITE.match(site or ""))


def new_site_api_token() -> str:
    """256 random bits, URL-safe: what the site sends as ``Authorization: Bearer``."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """SHA-256 (hex) of a token: what the registry holds. A random 256-bit token needs no
    slow hash: it cannot be guessed from its digest."""
    return hashlib.sha256((token or "").encode()).hexdigest()


def notification_key(digest: str) -> str:
    """The key HQ signs a site's payment notifications with (domain-separated from the
    digest that authenticates the site)."""
    return hmac.new(digest.encode(), b"kameng-site-notify:v1", hashlib.sha256).hexdigest()


def payment_link_key(digest: str) -> str:
    """The key a site signs its pay links with (:mod:`kameng.contracts.hq_api`); HQ derives
    it from the registry. Rotating the token retires the links signed before."""
    return hmac.new(digest.encode(), b"kameng-site-paylink:v1", hashlib.sha256).hexdigest()


class SiteCredential(BaseModel):
    """One site's entry in the registry."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    site: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str = Field(alias="createdAt")  # RFC 3339
    state: CredentialState = "active"
    # The `kameng.io/rotate-credentials` value this token answers ("" = first token).
    rotation: str = ""
    # The site's registered public URLs: HQ accepts payment notify/return URLs only there.
    urls: list[str] = Field(default_factory=list)
    # The License's scope now (None: not published; the token alone decides). HQ narrows
    # a token's claims to it, so a scope taken away mid-term is enforced at HQ at once,
    # even while the shop still holds (or a hostile shop keeps sending) an older token.
    categories: list[str] | None = None
    regions: list[str] | None = None

    def accepts(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token_digest(token), self.sha256)

    def notification_key(self) -> str:
        return notification_key(self.sha256)

    def payment_link_key(self) -> str:
        return payment_link_key(self.sha256)

    def to_json(self) -> str:
        # exclude_none: an entry without a published scope keeps its bytes.
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> SiteCredential:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise CredentialError(
                f"site credential entry is invalid ({exc.error_count()} errors)") from exc
