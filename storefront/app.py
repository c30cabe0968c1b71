"""ASGI application factory: one app, two modes (``hq`` | ``subsite``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import admin_app, hq_app, shop_app
from .bus import decisions_loop, flush_outbox, outbox_loop
from .catalog_sync import sync_loop
from .config import Settings
from .crypto import DataCipher
from .db import open_pool
from .license_guard import LicenseGuard
from .metrics import Metrics
from .orders import apply_decision, delivery_sweeper
from .payments import SandboxProvider
from .staff import bootstrap_staff
from .throttle import FailureThrottle
from .web import render

log = logging.getLogger("kameng.storefront")

# Paths served whatever the license says: probes and metrics keep the pod healthy while it
# shows the 503 page, and payment notifications of orders placed earlier are still recorded.
_ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics", "/api/payments/notify")


class LicenseGate:
    """Pure ASGI middleware: a suspended (or unlicensed) sub-site answers 503 everywhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_ALWAYS_OPEN):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if state.settings.mode == "subsite" and state.effective_mode() == "suspended":
            request = Request(scope, receive)
            response = render(request, "unavailable.html", status_code=503)
            response.headers["Retry-After"] = "300"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            # The router records the endpoint in the shared scope; its name is a bounded label
            # (raw paths would carry order ids and explode the metric's cardinality).
            name = getattr(scope.get("endpoint"), "__name__", "unmatched")
            scope["app"].state.metrics.requests.labels(
                scope["method"], name, str(status["code"])
            ).observe(time.perf_counter() - start)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        async with state.pool.connection() as conn:
            await conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = type(exc).__name__
    try:
        await state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = type(exc).__name__
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"ready": ok, "checks": checks}
    if state.settings.mode == "subsite":
        body["licenseMode"] = state.effective_mode()
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics_endpoint(request: Request) -> Response:
    state = request.app.state
    if state.settings.mode == "subsite":
        current = state.effective_mode()
        for m in ("normal", "readOnly", "suspended"):
            state.metrics.license_mode.labels(m).set(1 if m == current else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(settings: Settings, http: httpx.AsyncClient | None = None) -> Starlette:
    """Build the app. ``http`` lets tests inject a client; otherwise one is created."""
    cipher = DataCipher(settings.data_keys)  # fail fast on bad key material

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        st = app.state
        st.pool = await open_pool(settings.database_url, settings.mode, max_size=settings.pool_size)
        st.redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        st.http = http or httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        await bootstrap_staff(st)
        tasks: list[asyncio.Task[None]] = []
        if settings.mode == "hq":
            tasks.append(asyncio.create_task(hq_app.notification_sweeper(st)))
        else:
            st.payments = SandboxProvider(
                st.http, settings.hq_url, settings.site.site, settings.hq_api_token,
                license_token=lambda: st.license.token,
            )
            await flush_outbox(st)
            tasks += [
                asyncio.create_task(sync_loop(st)),
                asyncio.create_task(outbox_loop(st)),
                asyncio.create_task(decisions_loop(st, apply_decision)),
                asyncio.create_task(delivery_sweeper(st)),
            ]
        log.info("storefront started", extra={"mode": settings.mode, "site": settings.site.site})
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if http is None:
                await st.http.aclose()
            await st.redis.aclose()
            await st.pool.close()

    common = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
    ]
    if settings.mode == "hq":
        routes = common + hq_app.routes()
    else:
        routes = common + shop_app.routes() + admin_app.routes()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestMetrics),
            Middleware(
                SessionMiddleware, secret_key=settings.session_secret,
                session_cookie=f"kameng_{settings.mode}", same_site="lax",
                https_only=settings.public_url.startswith("https://"),
            ),
            Middleware(LicenseGate),
        ],
    )
    app.state.settings = settings
    app.state.cipher = cipher
    app.state.metrics = Metrics()
    app.state.throttle = FailureThrottle()
    if settings.mode == "hq":
        keys = [k.strip() for k in settings.hq_public_key.split(",") if k.strip()]
        from kameng.contracts.license_token import load_public_key

        app.state.license_keys = [load_public_key(k) for k in keys]
        app.state.effective_mode = lambda: "normal"
    else:
        guard = LicenseGuard(
            settings.site, settings.license_token, settings.license_token_file,
            recheck_seconds=settings.license_recheck_seconds,
        )
        app.state.license = guard
        app.state.effective_mode = guard.mode
    return app
