"""Per-site authentication to HQ's fulfilment API.

A site's API token is derived from HQ's fulfilment master secret and the site name, so
HQ keeps no per-site table and the operator can mint the token for a new sub-site (Secret
``storefront-keys``, key ``hq-api-token``) without talking to HQ.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["derive_site_api_token", "verify_site_api_token"]


def derive_site_api_token(master_secret: bytes | str, site: str) -> str:
    key = master_secret.encode() if isinstance(master_secret, str) else master_secret
    if not key:
        raise ValueError("master secret must not be empty")
    return hmac.new(key, b"kameng-site-api:" + site.encode(), hashlib.sha256).hexdigest()


def verify_site_api_token(master_secret: bytes | str, site: str, token: str) -> bool:
    return hmac.compare_digest(derive_site_api_token(master_secret, site), token or "")
