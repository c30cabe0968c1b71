"""Redis ACL user per site: only its own keys and streams.

* ``site:<site>:*`` — read and write (caches, sessions);
* ``kameng:orders:<site>`` — write only (the storefront XADDs order events);
* ``kameng:decisions:<site>`` — read only (risk decisions for this site).
Selectors (``%R~`` / ``%W~``) need Redis 7. An ACL user carries no comment, so the
operator records the SubSite uid of each user it creates in the admin-only hash
``kameng:acl-owners`` and touches no user that is not recorded there for this SubSite.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .names import REDIS_OWNERS_KEY, redis_user
from .ownership import Claim, judge


class RedisUnavailable(Exception):
    """Redis could not be reached or refused the admin. No URL in the message."""


@dataclass(frozen=True)
class RedisTarget:
    scheme: str
    host: str
    port: int
    db: int


def target_of(admin_url: str) -> RedisTarget:
    u = urlsplit(admin_url)
    db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() else 0
    return RedisTarget(u.scheme or "redis", u.hostname or "127.0.0.1", u.port or 6379, db)


def site_url(site: str, password: str, target: RedisTarget, host: str | None = None) -> str:
    user = quote(redis_user(site), safe="")
    return (f"{target.scheme}://{user}:{quote(password, safe='')}@"
            f"{host or target.host}:{target.port}/{target.db}")


def acl_rules(site: str, password: str) -> list[str]:
    digest = hashlib.sha256(password.encode()).hexdigest()
    return [
        "reset", "on", f"#{digest}",
        f"~site:{site}:*",
        f"%W~kameng:orders:{site}",
        f"%R~kameng:decisions:{site}",
        "resetchannels",
        "-@all", "+@read", "+@write", "+@stream", "+@keyspace", "+@transaction",
        "+@connection", "-@dangerous", "-@admin", "-@pubsub", "-@scripting",
    ]


class RedisAcl:
    def __init__(self, admin_url: str) -> None:
        self._client = aioredis.from_url(admin_url, socket_connect_timeout=5,
                                         socket_timeout=5)
        # Rules applied by this process: after a restart every user is set once more
        # (rules may have changed with the operator version), then only on change.
        self._applied: dict[str, str] = {}
        # What :meth:`restore` sets again after Redis lost its users: per site, the user,
        # its rules and the SubSite uid it was created for (in memory only: the rules
        # carry a password digest, never the password).
        self._users: dict[str, tuple[str, list[str], str]] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def ensure(self, site: str, claim: Claim, password: str) -> bool:
        user = redis_user(site)
        rules = acl_rules(site, password)
        fingerprint = hashlib.sha256("\n".join(rules).encode()).hexdigest()
        try:
            current = await self._client.acl_getuser(user)
            owner = await self._client.hget(REDIS_OWNERS_KEY, user)
            owner_uid = owner.decode() if isinstance(owner, bytes) else owner
            verdict = judge(f"Redis ACL user {user}", current is not None, owner_uid, claim)
            digest = rules[2][1:]
            if (verdict == "ours" and self._applied.get(site) == fingerprint
                    and digest in [p.decode() if isinstance(p, bytes) else p
                                   for p in current.get("passwords", [])]):
                return False
            if verdict != "ours":
                # Recorded before the user exists: a crash in between leaves a record
                # for a missing user (harmless), never an unrecorded user of ours.
                await self._client.hset(REDIS_OWNERS_KEY, user, claim.uid)
            await self._client.execute_command("ACL", "SETUSER", user, *rules)
        except RedisError as exc:
            raise RedisUnavailable(f"Redis refused the ACL user ({type(exc).__name__})") \
                from None
        self._applied[site] = fingerprint
        self._users[site] = (user, rules, claim.uid)
        return True

    async def server_id(self) -> str:
        """Redis's ``run_id``: new at every start of the server."""
        try:
            return str((await self._client.info("server"))["run_id"])
        except (RedisError, KeyError) as exc:
            raise RedisUnavailable(f"Redis did not answer INFO ({type(exc).__name__})") \
                from None

    async def restore(self) -> int:
        """Set every user this process applied again, with its owner record, in ONE
        round trip: Redis restarted without an ACL file (users are configuration, not
        data: neither RDB nor AOF keeps them), and every shop's connection is refused
        until its user exists. Returns how many were set."""
        users = list(self._users.values())
        if not users:
            return 0
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for user, rules, uid in users:
                    pipe.hset(REDIS_OWNERS_KEY, user, uid)
                    pipe.execute_command("ACL", "SETUSER", user, *rules)
                await pipe.execute()
        except RedisError as exc:
            raise RedisUnavailable(f"Redis refused restoring ACL users "
                                   f"({type(exc).__name__})") from None
        return len(users)

    async def remove(self, site: str, claim: Claim) -> str | None:
        """Delete the site's user if it is this SubSite's; else say why it was left."""
        user = redis_user(site)
        try:
            current = await self._client.acl_getuser(user)
            owner = await self._client.hget(REDIS_OWNERS_KEY, user)
            owner_uid = owner.decode() if isinstance(owner, bytes) else owner
            if current is not None and owner_uid != claim.uid and not (
                    owner_uid is None and claim.adopt_unmarked):
                self._applied.pop(site, None)
                self._users.pop(site, None)
                return f"Redis ACL user {user} was not created for this SubSite; left in place"
            await self._client.acl_deluser(user)
            if owner_uid == claim.uid:
                await self._client.hdel(REDIS_OWNERS_KEY, user)
        except RedisError as exc:
            raise RedisUnavailable(f"Redis refused deleting the ACL user "
                                   f"({type(exc).__name__})") from None
        self._applied.pop(site, None)
        self._users.pop(site, None)
        return None
