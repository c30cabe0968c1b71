"""Which URLs HQ accepts from a sub-site for its payments: the ``notify_url`` HQ will POST
to and the ``return_url`` HQ's pay page sends the buyer to.

Both must lie on one of the site's registered public URLs (its domain, or the shop URL the
operator configured; published in the site-credential registry): the same scheme (http or
https), host and port, no user-info, nothing a browser or an HTTP client could read
differently. So a site can neither make HQ call an internal address (SSRF) nor put a
``javascript:`` or foreign link on HQ's origin; an internal address is accepted only when
the site's registered URL is that address (the dev environment's loopback shops).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL without user-info, else None."""
    if not url or len(url) > MAX_URL_LENGTH:
        return None
    # Whitespace, control characters and backslashes are where parsers disagree
    # (`https://shop.example\\@evil.example`): refuse them outright.
    if any(ch <= " " or ch in "\\\x7f" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not parts.hostname or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]


def is_internal(host: str) -> bool:
    """Whether ``host`` is an IP literal of a non-public address (or ``localhost``)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not ip.is_global


def url_refusal(url: str, registered: Iterable[str]) -> str | None:
    """Why ``url`` is not acceptable for the site whose public URLs are ``registered``
    (None: it is)."""
    origin = _origin(url)
    if origin is None:
        return "not an absolute http(s) URL without user-info"
    allowed = {o for o in (_origin(r) for r in registered) if o is not None}
    if origin not in allowed:
        if is_internal(origin[1]):
            return "an internal address that is not the site's registered URL"
        return "not on the site's registered public URL"
    return None
