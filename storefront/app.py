"""ASGI application factory: one app, two modes (``hq`` | ``subsite``).

The mode picks the routes (``hq/`` or ``shop/``, each composed with ``Mount``) and the
background loops; probes, middleware, templates and staff login are shared (``web/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from kameng.contracts.license_token import load_public_key

from . import hq, shop
from .config import Settings
from .crypto import DataCipher
from .db import open_pool
from .hq.credentials import CredentialRegistry
from .hq.kpis import kpi_loop
from .hq.notifications import notification_sweeper
from .hq.onboarding import expiry_sweeper
from .hq.payments import announce_sandbox
from .shop.bus import decisions_loop, flush_outbox, outbox_loop
from .shop.catalog import sync_loop
from .shop.fast_path import CataloguePageFastPath
from .shop.hq_client import HqClient
from .shop.kpis import flush_visits, report_loop, visit_flush_loop
from .shop.orders import apply_decision, delivery_sweeper
from .shop.payments import SandboxProvider
from .shop.requests import money_approvals_loop
from .state import AppState, state_of
from .web import probes
from .web.license_guard import LicenseGuard
from .web.middleware import BodyLimit, LicenseGate, RejectNul, RequestMetrics, TrustedProxies
from .web.page_cache import PageCache, SharedCounter
from .web.staff import bootstrap_staff
from .web.throttle import FailureThrottle
from .workers import LeaderLock, inherited_sockets, shared_dir, worker_pool_size

log = logging.getLogger("kameng.storefront")

Loop = Callable[[AppState], Coroutine[Any, Any, None]]
SHOP_WARM_CONNECTIONS = 4  # a checkout, a notification, a delivery and a background loop


def _state(settings: Settings) -> AppState:
    state = AppState(settings=settings, cipher=DataCipher(settings.data_keys))  # fail fast
    state.throttle = FailureThrottle(settings.site.site)
    pod_dir = shared_dir()
    if pod_dir is not None:  # one of several workers: the pod's counter, not our own
        state.pages = PageCache(SharedCounter(pod_dir / "pages.generation"))
    if settings.mode == "hq":
        keys = [k.strip() for k in settings.hq_public_key.split(",") if k.strip()]
        state.license_keys = [load_public_key(k) for k in keys]
        state.credentials = CredentialRegistry(settings.site_credentials_dir)
        announce_sandbox(state)
    else:
        state.license = LicenseGuard(
            settings.site, settings.license_token, settings.license_token_file,
            recheck_seconds=settings.license_recheck_seconds,
        )
    return state


async def _start_subsite(state: AppState) -> list[Loop]:
    state.hq = HqClient(
        state.http, state.settings.hq_url, state.site, state.settings.hq_api_token,
        license_token=lambda: state.guard().token,
    )
    state.payments = SandboxProvider(state.hq, state.settings.pay_base)
    await flush_outbox(state)

    async def decisions(st: AppState) -> None:
        await decisions_loop(st, apply_decision)

    return [sync_loop, outbox_loop, decisions, delivery_sweeper, report_loop,
            money_approvals_loop]


async def _db_timeout(request: Request, exc: Exception) -> Response:
    """A request that waited too long for a database connection: counted (the alert
    KamengStorefrontDatabaseTimeouts) and answered 503, so clients retry."""
    state_of(request).metrics.db_timeouts.inc()
    log.warning("database connection timeout", extra={"path": request.url.path[:200]})
    return PlainTextResponse("database busy, try again", status_code=503,
                             headers={"Retry-After": "5"})


# Outgoing HTTP (shop → HQ: payments, fulfilment; HQ → shops: notifications), over
# kept-alive connections, all of them kept (httpx keeps 20 by default). httpcore's pool
# checks every idle connection against every other, and every queued request against
# every connection, on each request and each response (a socket poll each): a third of
# HQ's samples in the order bench's pay phase, with up to 100 connections and a queue.
# So calls past this many wait outside the pool (_BoundedClient), and the pool, which
# only opens connections on demand, stays as small as the concurrency. Not smaller: 55
# checkouts at once (tests/integration/test_storefront_money.py) must not wait for one
# another's calls to HQ.
HTTP_CONNECTIONS = 64

# How long the server keeps an idle HTTP/1.1 connection open. uvicorn's default (5 s) equals
# httpx's client expiry and is shorter than ingress-nginx's upstream keep-alive (60 s), so a
# client could send a request on a connection the server was closing that instant, and get
# a reset instead of a response (a POST cannot be retried blindly). Longer than every
# client's idle timeout, the client always lets go first.
KEEP_ALIVE_S = 75


class _BoundedClient(httpx.AsyncClient):
    """Calls past :data:`HTTP_CONNECTIONS` in flight wait here (an O(1) asyncio queue),
    not in httpcore's pool, so its bookkeeping never scans a queue. The wait is bounded by
    the call's own pool timeout, as httpcore's was (``httpx.PoolTimeout``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._slots = asyncio.Semaphore(HTTP_CONNECTIONS)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        wait = (request.extensions.get("timeout") or {}).get("pool")
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection", request=request) from exc
        try:
            return await super().send(request, **kwargs)
        finally:
            self._slots.release()


def http_client() -> httpx.AsyncClient:
    """The app's client for its outgoing calls (see :data:`HTTP_CONNECTIONS`)."""
    return _BoundedClient(limits=httpx.Limits(
        max_connections=HTTP_CONNECTIONS, max_keepalive_connections=HTTP_CONNECTIONS))


def create_app(settings: Settings, http: httpx.AsyncClient | None = None) -> Starlette:
    """Build the app. ``http`` lets tests inject a client; otherwise one is created."""
    state = _state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        size = worker_pool_size(settings.pool_size)
        state.pool = await open_pool(
            settings.database_url, settings.mode, max_size=size,
            # Warm at start: a connection opened while a request waits costs it the
            # server's fork and authentication (HQ spent 10 % of its order-path samples
            # there). HQ is one Deployment: all of its share. A shop keeps a few warm (one
            # PostgreSQL server serves many shops; idle ones must not hold 20 each).
            min_size=size if settings.mode == "hq" else min(size, SHOP_WARM_CONNECTIONS),
        )
        state.redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        state.http = http or http_client()
        await bootstrap_staff(state)
        loops: list[Loop] = (
            [notification_sweeper, kpi_loop, expiry_sweeper] if settings.mode == "hq"
            else await _start_subsite(state)
        )
        leader = LeaderLock(shared_dir())

        async def lead() -> None:
            # Once per pod: see workers.LeaderLock.
            await leader.wait()
            state.metrics.background_leader.set(1)
            await asyncio.gather(*(loop(state) for loop in loops))

        tasks = [asyncio.create_task(lead())]
        if settings.mode == "subsite":  # every worker flushes its own page views
            tasks.append(asyncio.create_task(visit_flush_loop(state)))
        log.info("storefront started", extra={"mode": settings.mode, "site": state.site})
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if settings.mode == "subsite":
                try:  # this worker's last second of page views
                    await flush_visits(state)
                except Exception as exc:
                    log.warning("visits not counted", extra={"error": type(exc).__name__})
            if http is None:
                await state.http.aclose()
            if state.kube is not None:
                await state.kube.close()
            await state.redis.aclose()
            await state.pool.close()

    mode_routes = hq.routes() if settings.mode == "hq" else shop.routes()
    session_cookie = f"kameng_{settings.mode}"
    # The shop's catalogue hits skip the rest of the stack (see shop.fast_path).
    fast = ([Middleware(CataloguePageFastPath, session_cookie=session_cookie)]
            if settings.mode == "subsite" else [])
    app = Starlette(
        # No probes here: they are on the ops port (probes.ops_app), never behind the Ingress.
        routes=mode_routes,
        lifespan=lifespan,
        exception_handlers={PoolTimeout: _db_timeout},
        middleware=[
            *fast,
            Middleware(RequestMetrics),
            Middleware(TrustedProxies, trusted=settings.trusted_proxies),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       upload_bytes=settings.max_upload_bytes),
            Middleware(RejectNul),
            Middleware(
                SessionMiddleware, secret_key=settings.session_secret,
                session_cookie=session_cookie, same_site="lax",
                https_only=settings.public_url.startswith("https://"),
            ),
            Middleware(LicenseGate),
        ],
    )
    app.state.kameng = state
    return app


def create_ops_app(app: Starlette) -> Starlette:
    """The probes-and-metrics app of ``app``, to be served on the ops port."""
    return probes.ops_app(app)


class _NoSignals(uvicorn.Server):
    # The public server owns SIGTERM/SIGINT; this one stops when that one has stopped.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: Starlette, host: str, port: int, ops_port: int) -> None:
    """Serve ``app`` on ``port`` and its probes and metrics on ``ops_port``, in one loop
    (as a worker of several: on the sockets the supervisor bound, see ``workers``).

    Forwarded headers are left to :class:`TrustedProxies` (uvicorn's own handling is off):
    only the configured proxies are believed."""
    common: dict[str, Any] = dict(host=host, log_config=None, access_log=False,
                                  proxy_headers=False, timeout_keep_alive=KEEP_ALIVE_S)
    public = uvicorn.Server(uvicorn.Config(app, port=port, lifespan="on", **common))
    ops = _NoSignals(uvicorn.Config(create_ops_app(app), port=ops_port, lifespan="off",
                                    **common))
    sockets = inherited_sockets()
    ops_task = asyncio.create_task(ops.serve(sockets=[sockets[1]] if sockets else None))
    try:
        await public.serve(sockets=[sockets[0]] if sockets else None)
    finally:
        ops.should_exit = True
        await ops_task
