"""Failure throttle for guessable forms (staff login, order lookup), shared by replicas.

Counted in Redis, so every replica of a site sees the same numbers, in fixed windows whose
keys expire on their own: nothing grows without bound in the process, and Redis holds at
most one short, fixed-size key per (limit, subject) seen within a window. Keys live under
``site:<site>:throttle:``, the prefix the site's Redis ACL user may write.

Who is throttled matters as much as how much. Staff login counts failures per (account,
client) and per client, never per account alone: a stranger who types a named admin's
e-mail wrongly ten times locks out only themselves, not the admin. The client is the
address the trusted-proxy middleware resolved (never a client-supplied header); an IPv6
client counts per /64, the block one subscriber usually gets, so rotating addresses inside
it does not reset the count.

When Redis cannot be reached the throttle lets the attempt through and logs it: the
password check (argon2) still runs, and a Redis outage must not lock every member out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("kameng.storefront.throttle")


@dataclass(frozen=True)
class Limit:
    name: str
    max_failures: int
    window_seconds: int


# One home for the numbers. A client behind a shared NAT gets a more generous per-client
# budget than one (account, client) pair: several people may sit behind it.
LOGIN_PER_ACCOUNT_CLIENT = Limit("login", 10, 300)
LOGIN_PER_CLIENT = Limit("login-client", 50, 300)
LOOKUP_PER_ORDER_CLIENT = Limit("lookup", 10, 300)
LOOKUP_PER_CLIENT = Limit("lookup-client", 30, 300)
# A logged-in member guessing their own current password: per account is right here, the
# session already proves who it is.
PASSWORD_PER_ACCOUNT = Limit("password", 10, 300)
# Forged invitation tokens, per client (a genuine but used or expired one never counts).
INVITE_PER_CLIENT = Limit("invite-client", 20, 300)


def client_subject(host: str) -> str:
    """The unit a client is counted in: its IPv4 address, or its IPv6 /64."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]  # not an address (a test client, a unix socket): as it is
    if addr.version == 6 and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)


Check = tuple[Limit, tuple[str, ...]]


class FailureThrottle:
    def __init__(self, site: str) -> None:
        self.prefix = f"site:{site}:throttle"

    def key(self, limit: Limit, subject: tuple[str, ...]) -> str:
        # Hashed: the subject comes from the request (an e-mail, an order id) and may be
        # long or odd; the key stays short, fixed-size and free of personal data.
        digest = hashlib.sha256("\0".join(subject).encode("utf-8", "replace")).hexdigest()
        return f"{self.prefix}:{limit.name}:{digest[:32]}"

    async def blocked(self, redis: aioredis.Redis, checks: Sequence[Check]) -> bool:
        """True when any of ``checks`` has used up its failures in the current window."""
        keys = [self.key(limit, subject) for limit, subject in checks]
        try:
            counts = await redis.mget(keys)
        except RedisError as exc:
            log.warning("throttle unavailable, not enforced", extra={"error": type(exc).__name__})
            return False
        return any(
            int(c or 0) >= limit.max_failures
            for (limit, _), c in zip(checks, counts, strict=True)
        )

    async def failed(self, redis: aioredis.Redis, checks: Sequence[Check]) -> None:
        """Count one failure against every check (one round trip, atomically)."""
        try:
            async with redis.pipeline(transaction=True) as pipe:
                for limit, subject in checks:
                    key = self.key(limit, subject)
                    # The window starts at the first failure and ends by itself (TTL).
                    pipe.set(key, 0, ex=limit.window_seconds, nx=True)
                    pipe.incr(key)
                await pipe.execute()
        except RedisError as exc:
            log.warning("throttle unavailable, failure not counted",
                        extra={"error": type(exc).__name__})
