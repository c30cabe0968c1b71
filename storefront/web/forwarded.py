"""Who the client is, behind reverse proxies: X-Forwarded-For is believed only from
the configured proxies. Pure functions (no app imports), used by the middleware and by the
settings that parse the proxy list."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.168.1.7"`` → networks; raises ValueError naming the bad entry."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {part[:60]!r}") from None
    return tuple(out)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def resolve_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the
    X-Forwarded-For hops are walked from the right (the hop our proxy appended) past every
    trusted proxy to the first address that is not one. A hop a client wrote itself sits
    left of that and is never believed; a hop that is not an address ends the walk at the
    last trusted hop, which a forged header therefore cannot get past."""

    def is_trusted(host: str) -> bool:
        addr = _address(host)
        return addr is not None and any(addr in net for net in trusted)

    current = peer
    hops = [h for value in forwarded_for for h in value.split(",")]
    for hop in reversed(hops):
        if not is_trusted(current):
            break
        addr = _address(hop)
        if addr is None:
            break
        current = str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)
    return current
