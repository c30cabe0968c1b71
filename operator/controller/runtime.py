"""The operator's long-lived collaborators and per-site state, created at startup and
handed to every handler through kopf's ``memo`` (never a module global)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kameng.children.context import Platform
from kameng.contracts.hq_auth import SiteCredential
from kameng.kube.cache import ChildCache
from kameng.kube.client import Kube
from kameng.provision import redis_acl
from kameng.provision import servers as pg_servers
from kameng.provision.redis_acl import RedisAcl, RedisTarget
from kameng.provision.servers import Databases

from . import hqkeys, metrics
from .config import OperatorConfig
from .hqkeys import HqKeys
from .metrics import publish_phases
from .sitecreds import Registry


@dataclass
class SiteState:
    """What the operator remembers about one SubSite between reconciles."""

    seen_generation: int | None = None  # generation last reconciled
    last_status: dict[str, Any] | None = None  # status last written
    failures: int = 0  # consecutive failed reconciles
    keys_backed_up: bool = False
    # Digest of the inputs PostgreSQL and Redis were last provisioned with by this
    # process, and when (monotonic); see reconcile._backends.
    backends_ok: tuple[str, float] | None = None
    # The site's entry in the site-credential registry as last read or written
    # and when it was last read from the API (monotonic seconds; -inf: never).
    credential: SiteCredential | None = None
    credential_loaded_at: float = float("-inf")
    # The acted-on annotations as last reconciled (a change wakes the loop).
    annotations_seen: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    conflict: str | None = None  # the ownership conflict last reported as an Event
    placement_warning: str | None = None  # the placement warning last reported
    # Held while the site's database/Redis user is being created or reclaimed: a deletion
    # waits for an in-flight CREATE DATABASE instead of racing it (an orphan otherwise).
    backend_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Held for one whole reconcile: a deletion takes it after marking the SubSite
    # reclaimed, so it waits for the reconcile in flight and no other one starts.
    reconcile_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Triggers:
    """One wake-up flag per running site loop; pokes for unknown sites are dropped
    (a loop always reconciles when it starts)."""

    def __init__(self) -> None:
        self._flags: dict[str, asyncio.Event] = {}

    def register(self, site: str) -> asyncio.Event:
        flag = self._flags.get(site) or asyncio.Event()
        self._flags[site] = flag
        return flag

    def unregister(self, site: str, flag: asyncio.Event) -> None:
        if self._flags.get(site) is flag:
            del self._flags[site]

    def poke(self, site: str, cause: str) -> None:
        flag = self._flags.get(site)
        if flag is not None:
            metrics.WAKES.labels(cause=cause).inc()
            flag.set()


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    postgres: Databases  # one admin client per PostgreSQL server, and the placements
    redis: RedisAcl
    redis_target: RedisTarget
    keys: HqKeys
    platform: Platform
    semaphore: asyncio.Semaphore
    registry: Registry  # the site-credential registry's writer (group commit)
    cache: ChildCache = field(default_factory=ChildCache)
    triggers: Triggers = field(default_factory=Triggers)
    sites: dict[str, SiteState] = field(default_factory=dict)
    closing: bool = False  # set at shutdown: loops end quietly instead of failing
    # uids of SubSites whose deletion began: nothing is provisioned or applied for them
    # any more, even by a reconcile that started before (kept by uid: a new SubSite of
    # the same name is another object).
    reclaimed: set[str] = field(default_factory=set)
    # Sites that wait for a domain another SubSite holds: woken when any SubSite changes.
    domain_waiting: set[str] = field(default_factory=set)
    # Per (kind, name) of a License or RolePolicy, what its sites last read of it (see
    # agreement_changed): its own status writes echo as events and must not
    # wake every site that references it.
    agreements_seen: dict[tuple[str, str], Any] = field(default_factory=dict)

    def site(self, name: str) -> SiteState:
        return self.sites.setdefault(name, SiteState())

    def set_phase(self, name: str, phase: str) -> None:
        if self.site(name).phase == phase:
            return  # the gauge counts every site: recounted on a change only
        self.site(name).phase = phase
        publish_phases(s.phase for s in self.sites.values())

    def forget(self, name: str) -> None:
        self.cache.forget_site(name)
        self.domain_waiting.discard(name)
        self.sites.pop(name, None)
        publish_phases(s.phase for s in self.sites.values())


async def create_runtime(cfg: OperatorConfig) -> Runtime:
    """Clients, HQ keys and platform settings from the configuration (the operator's
    startup, and tests that drive the reconcile and the reclaim directly)."""
    kube = Kube.from_environment(cfg.kubeconfig)
    keys = await hqkeys.load_or_create(kube, cfg.namespace, cfg.hq_keys_secret)
    servers = await pg_servers.resolve(kube, pg_servers.entries_from_config(
        cfg.pg_servers_file, cfg.pg_admin_dsn, cfg.pg_site_host))
    first = servers[0]
    redis_target = redis_acl.target_of(cfg.redis_url)
    platform = Platform(
        storefront_image=cfg.storefront_image, hq_url=cfg.hq_url,
        hq_public_url=cfg.hq_public_url,
        hq_public_key=keys.public_key_b64, hq_namespace=cfg.namespace,
        ingress_class=cfg.ingress_class, ingress_namespace=cfg.ingress_namespace,
        monitoring_namespace=cfg.monitoring_namespace,
        trusted_proxies=cfg.trusted_proxies,
        # Each site's own server replaces these (reconcile); the first is the default.
        postgres_host=first.site_host, postgres_port=first.site_port,
        redis_host=cfg.redis_site_host or redis_target.host, redis_port=redis_target.port,
    )
    return Runtime(
        config=cfg, kube=kube, postgres=Databases(servers),
        redis=redis_acl.RedisAcl(cfg.redis_url),
        redis_target=redis_target, keys=keys, platform=platform,
        semaphore=asyncio.Semaphore(cfg.workers), registry=Registry(kube, cfg.namespace),
    )


def agreement_changed(rt: Runtime, kind: str, name: str, inputs: Any, deleted: bool) -> bool:
    """Whether what the sites read of a License or RolePolicy changed since the last event
    (always on its first event and its deletion). Status-only events, mostly the echoes of
    the operator's own status writes, are not: a License's daily "time left" step at
    midnight, or a RolePolicy's usage count, once woke every site referencing it (1,000
    reconciles that found nothing to do)."""
    key = (kind, name)
    if deleted:
        rt.agreements_seen.pop(key, None)
        return True
    if key in rt.agreements_seen and rt.agreements_seen[key] == inputs:
        return False
    rt.agreements_seen[key] = inputs
    return True
