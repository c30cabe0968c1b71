"""Staff invitations: the one-time credential that lets a sub-site member set a password.

Nobody shares a password. HQ-side tooling (``kubectl kameng invite``, the demo) or a
shop's member manager mints a compact signed token for one member; the member opens
``<site url>/admin/invite/<token>``, chooses a password and is logged in. The shop
accepts the token only when

* the signature is valid: HMAC-SHA256 with a key derived from the site's session secret
  (:func:`invitation_key`). The shop holds that secret in its ``storefront-keys`` Secret
  and HQ keeps a copy in its own namespace (``kameng-keys-<site>``), so only the shop and
  whoever may read HQ's Secrets can mint one; a member with rights in the site's
  namespace never reaches Secret contents;
* it is not expired (``exp``), and was not issued in the future beyond a small skew;
* its site is this shop, and ``member``/``email`` name a member of the site config;
* its ``nonce`` was never used (a table in the shop's database);
* the member's credential did not change after it was issued (``iat``): a password set,
  changed or reset makes every older invitation worthless.

Token: ``base64url(claims JSON) "." base64url(HMAC)``, no padding. ``iat``/``exp`` are
Unix seconds with millisecond precision, so "issued after the last change" holds even
within one second.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from urllib.parse import quote

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "INVITE_PATH_PREFIX",
    "MAX_TTL_SECONDS",
    "InvitationClaims",
    "InvitationError",
    "invitation_key",
    "invitation_url",
    "issue",
    "sign",
    "verify",
]

#: Relative to the site's root; the token follows as the last path segment.
INVITE_PATH_PREFIX = "/admin/invite/"
DEFAULT_TTL_SECONDS = 72 * 3600
#: An invitation is a credential: it never lives longer than this.
MAX_TTL_SECONDS = 30 * 24 * 3600
#: Clock skew tolerated between the minting machine and the shop.
CLOCK_SKEW_SECONDS = 300
_KEY_LABEL = b"kameng-staff-invitation-v1"
_MAX_TOKEN_CHARS = 2048


class InvitationError(ValueError):
    """Invalid invitation. ``reason`` is a short machine word (``malformed``,
    ``signature``, ``expired``, ``not_yet_valid``, ``site``); the message carries no
    secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invitation {reason}")
        self.reason = reason


@dataclass(frozen=True)
class InvitationClaims:
    site: str
    member: str
    email: str
    nonce: str
    iat: float
    exp: float


def invitation_key(session_secret: str) -> bytes:
    """The signing key: derived (not the session secret itself), so a leaked invitation
    key cannot forge session cookies and vice versa."""
    if not session_secret:
        raise ValueError("session secret must not be empty")
    return hmac.new(session_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: InvitationClaims, key: bytes) -> str:
    body = _b64(json.dumps(asdict(claims), sort_keys=True, separators=(",", ":")).encode())
    mac = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def issue(session_secret: str, site: str, member: str, email: str,
          ttl_seconds: float = DEFAULT_TTL_SECONDS, now: float | None = None) -> str:
    """A fresh invitation for ``member`` of ``site`` (``email`` as in the site config)."""
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"an invitation lives between 1 second and {MAX_TTL_SECONDS // 86400}"
                         " days")
    now = time.time() if now is None else now
    claims = InvitationClaims(site=site, member=member, email=email.strip().lower(),
                              nonce=secrets.token_urlsafe(16), iat=round(now, 3),
                              exp=round(now + ttl_seconds, 3))
    return sign(claims, invitation_key(session_secret))


def verify(token: str, key: bytes, site: str, now: float | None = None) -> InvitationClaims:
    """The claims of a valid, unexpired invitation for ``site``; raises
    :class:`InvitationError` otherwise. Checks against the shop's database (nonce unused,
    no credential change since ``iat``) and its member list are the shop's job."""
    if not token or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvitationError("malformed")
    body, _, mac = token.partition(".")
    try:
        sent = _unb64(mac)
        expected = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvitationError("malformed") from None
    if not hmac.compare_digest(sent, expected):
        raise InvitationError("signature")
    try:
        data = json.loads(_unb64(body))
        claims = InvitationClaims(
            site=str(data["site"]), member=str(data["member"]), email=str(data["email"]),
            nonce=str(data["nonce"]), iat=float(data["iat"]), exp=float(data["exp"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvitationError("malformed") from None
    now = time.time() if now is None else now
    if claims.site != site:
        raise InvitationError("site")
    if claims.iat > now + CLOCK_SKEW_SECONDS:
        raise InvitationError("not_yet_valid")
    if now >= claims.exp or claims.exp - claims.iat > MAX_TTL_SECONDS:
        raise InvitationError("expired")
    return claims


def invitation_url(site_url: str, token: str) -> str:
    return f"{site_url.rstrip('/')}{INVITE_PATH_PREFIX}{quote(token, safe='.-_')}"
