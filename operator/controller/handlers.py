"""kopf handler registration — thin: every handler delegates to a topic module.

Flow: one daemon per SubSite runs the reconcile loop; watch events (the SubSite, its
children, the License and RolePolicy it references) only *wake* that loop. So there is
exactly one reconcile per site at a time, and every trigger leads to the same
level-based reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from kameng.api.common import GROUP, VERSION
from kameng.api.holds import holds_of
from kameng.api.kinds import DATABASE_SERVER_ANNOTATION
from kameng.api.resources import LICENSE, ROLEPOLICY, SUBSITE
from kameng.licensing.lifecycle import terminated_of
from kameng.notify import config as notify_config
from kameng.provision.servers import ServerConfigError, describe

from . import (
    agreements,
    children_watch,
    deletion,
    domains,
    exclusive,
    metrics,
    reconcile,
    redis_watch,
)
from .config import OperatorConfig
from .runtime import Runtime, agreement_changed, create_runtime

log = logging.getLogger(__name__)
DEBOUNCE = 0.05

# What lives in kopf's memo (set up by `kameng operator` and the startup handler):
#   memo.config      OperatorConfig
#   memo.lease       exclusive.Lease held by a standalone operator, else None
#   memo.runtime     Runtime: clients, keys, child cache, per-site state
#   memo.agreements  Agreements: License and RolePolicy status keeper
#   memo.tasks       background tasks ended at cleanup (License clock, lease renewal)


@kopf.on.startup()
async def startup(memo: kopf.Memo, **_: Any) -> None:
    cfg: OperatorConfig = memo.config
    if not (cfg.pg_admin_dsn or cfg.pg_servers_file) or not cfg.redis_url:
        raise kopf.PermanentError("KAMENG_PG_ADMIN_DSN (or KAMENG_PG_SERVERS_FILE) and "
                                  "KAMENG_REDIS_URL are required")
    try:
        memo.runtime = await create_runtime(cfg)
    except ServerConfigError as exc:
        raise kopf.PermanentError(f"PostgreSQL servers: {exc}") from None
    kube = memo.runtime.kube
    metrics.publish_phases(())
    memo.agreements = agreements.Agreements(
        kube, notify_config.build(cfg.notify, kube, cfg.namespace))
    memo.tasks = [asyncio.create_task(memo.agreements.run_clock()),
                  *children_watch.start(memo.runtime), redis_watch.start(memo.runtime)]
    lease = memo.get("lease")
    if lease is not None:  # standalone: keep telling others that this one is active
        memo.tasks.append(asyncio.create_task(lease.keep()))
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    log.info("kameng operator started: %r; PostgreSQL servers %s", cfg,
             describe(list(memo.runtime.postgres.servers.values())))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks", []):
        task.cancel()
    ag: agreements.Agreements | None = memo.get("agreements")
    if ag is not None:
        ag.close()
    lease: exclusive.Lease | None = memo.get("lease")
    if lease is not None:
        await lease.release()
    rt: Runtime | None = memo.get("runtime")
    if rt is not None:
        rt.closing = True
        await rt.kube.close()
        await rt.redis.close()
        await rt.postgres.close()


# --- indexes: who references what, and the referenced specs (no list call per event) --
# Coroutines although they never await: kopf runs a plain function in a thread of its
# executor (a hop and a shielded future per index per event — four per SubSite event),
# and a coroutine inline.

@kopf.index(GROUP, VERSION, SUBSITE.plural)
async def subsites_by_license(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    return {spec.get("licenseRef", ""): name}


@kopf.index(GROUP, VERSION, SUBSITE.plural)
async def subsites_by_rolepolicy(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    return {spec.get("rolePolicyRef", "standard"): name}


@kopf.index(GROUP, VERSION, SUBSITE.plural)
async def subsites_by_domain(name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
                       ) -> dict[str, domains.DomainClaim]:
    return {spec.get("domain", ""): domains.DomainClaim(
        str(meta.get("creationTimestamp") or ""), name, str(meta.get("uid") or ""))}


@kopf.index(GROUP, VERSION, SUBSITE.plural)
async def database_servers(name: str, meta: kopf.Meta, status: kopf.Status, **_: Any
                     ) -> dict[str, str] | None:
    """Each placed site's PostgreSQL server (the capacity count of the placement)."""
    server = status.get("databaseServer") or \
        (meta.get("annotations") or {}).get(DATABASE_SERVER_ANNOTATION)
    return {name: server} if server else None


def license_inputs(spec: kopf.Spec | dict[str, Any], meta: kopf.Meta | dict[str, Any]
                   ) -> tuple[Any, ...]:
    """What a SubSite's reconcile reads of its License: the spec (by its generation),
    and the holds and termination, annotations beside the spec Git owns
    (kameng.api.holds) that change no generation. Never its status."""
    ann = meta.get("annotations")
    return (int(meta.get("generation", 1)), dict(spec), holds_of(ann), terminated_of(ann))


@kopf.index(GROUP, VERSION, LICENSE.plural)
async def licenses(name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> dict[str, Any]:
    return {name: license_inputs(spec, meta)}


@kopf.index(GROUP, VERSION, ROLEPOLICY.plural)
async def rolepolicies(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Any]:
    return {name: dict(spec)}


def _first(index: kopf.Index[str, Any], key: str) -> Any:
    return next(iter(index.get(key, [])), None)


# --- wake-ups --------------------------------------------------------------------------

@kopf.on.event(GROUP, VERSION, SUBSITE.plural)
async def subsite_event(name: str, meta: kopf.Meta, memo: kopf.Memo,
                        subsites_by_rolepolicy: kopf.Index[str, str],
                        event: kopf.RawEvent | None = None, spec: kopf.Spec | None = None,
                        **_: Any) -> None:
    ag: agreements.Agreements | None = memo.get("agreements")
    if ag is not None:
        ag.site_seen(name, dict(spec or {}), deleted=(event or {}).get("type") == "DELETED")
        await ag.policy_usage((p, len(subsites_by_rolepolicy.get(p, [])))
                              for p in list(ag.policies))
    rt: Runtime | None = memo.get("runtime")
    # Status-only changes (our own writes) do not bump the generation: no wake-up.
    if rt is not None:
        site = rt.sites.get(name)
        # Annotations the operator acts on (a rotation request, the shop URL) change no
        # generation, so they wake the loop by themselves.
        if site is None or site.seen_generation != meta.get("generation") or \
                site.annotations_seen != reconcile.acted_on_annotations(meta) or \
                (event or {}).get("type") == "DELETED":
            log.debug("wake %s: generation %s", name, meta.get("generation"))
            rt.triggers.poke(name, "subsite")
            # A SubSite that changed its domain or went away may free a domain others
            # wait for.
            for waiting in list(rt.domain_waiting - {name}):
                rt.triggers.poke(waiting, "domain")


def _poke_all(memo: kopf.Memo, index: kopf.Index[str, str], key: str, kind: str,
              inputs: Any, event: kopf.RawEvent) -> None:
    rt: Runtime | None = memo.get("runtime")
    if rt is not None and agreement_changed(rt, kind, key, inputs,
                                            event.get("type") == "DELETED"):
        for site in index.get(key, []):
            rt.triggers.poke(site, kind.lower())


@kopf.on.event(GROUP, VERSION, LICENSE.plural)
async def license_event(name: str, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                        subsites_by_license: kopf.Index[str, str], **_: Any) -> None:
    _poke_all(memo, subsites_by_license, name, LICENSE.kind,
              license_inputs(body.get("spec") or {}, body.get("metadata") or {}), event)
    ag: agreements.Agreements | None = memo.get("agreements")
    if ag is not None:
        if event.get("type") == "DELETED":
            ag.license_gone(name)
        else:
            await ag.license_seen(dict(body))


@kopf.on.event(GROUP, VERSION, ROLEPOLICY.plural)
async def rolepolicy_event(name: str, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                           subsites_by_rolepolicy: kopf.Index[str, str], **_: Any) -> None:
    # The sites read its spec only (the rolepolicies index): its generation says it all.
    _poke_all(memo, subsites_by_rolepolicy, name, ROLEPOLICY.kind,
              (body.get("metadata") or {}).get("generation"), event)
    ag: agreements.Agreements | None = memo.get("agreements")
    if ag is not None:
        if event.get("type") == "DELETED":
            ag.policy_gone(name)
        else:
            await ag.policy_seen(dict(body), len(subsites_by_rolepolicy.get(name, [])))


# --- the reconcile loop and deletion ---------------------------------------------------

async def _await_new_license(body: kopf.Body, licenses: kopf.Index[str, Any],
                             wake: asyncio.Event, stop: asyncio.Task[None]) -> None:
    """A new SubSite's first reconcile waits briefly for its License (see
    ``reconcile.NEW_LICENSE_WAIT``); the License's event pokes the site awake."""
    loop = asyncio.get_running_loop()
    ref = (body.get("spec") or {}).get("licenseRef", "")
    deadline = loop.time() + reconcile.license_wait(dict(body), _first(licenses, ref),
                                                    datetime.now(UTC))
    while _first(licenses, ref) is None and (left := deadline - loop.time()) > 0 \
            and not stop.done():
        wake.clear()
        woken = asyncio.create_task(wake.wait())
        await asyncio.wait({woken, stop}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()


@kopf.daemon(GROUP, VERSION, SUBSITE.plural, id="reconcile", cancellation_backoff=2.0,
             cancellation_timeout=5.0)
async def reconcile_loop(name: str, body: kopf.Body, licenses: kopf.Index[str, Any],
                         rolepolicies: kopf.Index[str, Any],
                         subsites_by_domain: kopf.Index[str, Any],
                         database_servers: kopf.Index[str, str], stopped: kopf.DaemonStopped,
                         memo: kopf.Memo, **_: Any) -> None:
    rt: Runtime = memo.runtime
    wake = rt.triggers.register(name)

    async def until_stopped() -> None:
        await stopped.wait()

    stop = asyncio.create_task(until_stopped())
    try:
        await _await_new_license(body, licenses, wake, stop)
        while not stopped and not reconcile.being_deleted(rt, dict(body)):
            wake.clear()
            spec = body.get("spec") or {}
            try:
                async with rt.semaphore:
                    delay = await reconcile.reconcile(
                        rt, dict(body), _first(licenses, spec.get("licenseRef", "")),
                        _first(rolepolicies, spec.get("rolePolicyRef", "standard")),
                        list(subsites_by_domain.get(spec.get("domain", ""), [])),
                        {site: next(iter(v)) for site, v in database_servers.items() if v})
            except Exception:  # a bug must not end the site's loop for good
                if rt.closing:
                    return
                metrics.RECONCILE_ERRORS.labels(reason="Unexpected").inc()
                log.exception("SubSite %s: reconcile failed unexpectedly", name)
                delay = reconcile.MAX_BACKOFF
            if rt.site(name).failures:
                pause = min(delay, reconcile.MIN_RETRY_PAUSE)
                await asyncio.sleep(pause)
                delay -= pause
            woken = asyncio.create_task(wake.wait())
            # Deletion (or shutdown) ends the loop between reconciles, without a cancel.
            await asyncio.wait({woken, stop}, timeout=max(delay, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
            if not woken.done() and not stop.done():
                metrics.WAKES.labels(cause="timer").inc()
            woken.cancel()
            await asyncio.sleep(DEBOUNCE)  # coalesce a burst of child events
    finally:
        stop.cancel()
        rt.triggers.unregister(name, wake)


@kopf.on.delete(GROUP, VERSION, SUBSITE.plural, id="reclaim")
async def reclaim(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
    await deletion.reclaim(memo.runtime, dict(body), retry)
