"""The operator's long-lived collaborators, created at startup and shared by handlers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kameng.children.context import Platform
from kameng.provision.postgres import PgTarget, Postgres
from kameng.provision.redis_acl import RedisAcl, RedisTarget

from .config import OperatorConfig
from .hqkeys import HqKeys
from .kube import Kube
from .metrics import PhaseTracker
from .state import ChildCache, Triggers


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    postgres: Postgres
    redis: RedisAcl
    pg_target: PgTarget
    redis_target: RedisTarget
    keys: HqKeys
    platform: Platform
    semaphore: asyncio.Semaphore
    cache: ChildCache = field(default_factory=ChildCache)
    triggers: Triggers = field(default_factory=Triggers)
    phases: PhaseTracker = field(default_factory=PhaseTracker)
    # Per site: generation last reconciled, status last written, consecutive failures.
    seen_generation: dict[str, int] = field(default_factory=dict)
    last_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    keys_backed_up: set[str] = field(default_factory=set)
    # Held while a site's database/Redis user is being created or reclaimed: a deletion
    # waits for an in-flight CREATE DATABASE instead of racing it (an orphan otherwise).
    backend_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    closing: bool = False  # set at shutdown: loops end quietly instead of failing

    def backend_lock(self, site: str) -> asyncio.Lock:
        return self.backend_locks.setdefault(site, asyncio.Lock())

    def forget(self, site: str) -> None:
        self.cache.forget_site(site)
        self.phases.forget(site)
        self.seen_generation.pop(site, None)
        self.last_status.pop(site, None)
        self.failures.pop(site, None)
        self.keys_backed_up.discard(site)
        self.backend_locks.pop(site, None)


RUNTIME: Runtime | None = None


def get() -> Runtime:
    if RUNTIME is None:
        raise RuntimeError("operator runtime is not started")
    return RUNTIME
