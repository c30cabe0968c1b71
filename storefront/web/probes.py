"""Liveness, readiness and Prometheus endpoints (both modes), on a port of their own.

They are served by :func:`ops_app`, a second ASGI app on the ops port
(:data:`kameng.contracts.pod.OPS_PORT`) sharing the public app's state; the public app
(behind the Ingress) does not have these routes and answers 404: who can reach the shop
cannot read its metrics or probe its database.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kameng.contracts.pod import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH

from ..state import state_of

PROBE_PATHS = (HEALTHZ_PATH, READYZ_PATH, METRICS_PATH)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    state = state_of(request)
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
    if state.license is not None:
        body["licenseMode"] = state.effective_mode()
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics_endpoint(request: Request) -> Response:
    state = state_of(request)
    if state.license is not None:
        current = state.effective_mode()
        for m in ("normal", "readOnly", "suspended"):
            state.metrics.license_mode.labels(m).set(1 if m == current else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def routes() -> list[Route]:
    return [
        Route(HEALTHZ_PATH, healthz),
        Route(READYZ_PATH, readyz),
        Route(METRICS_PATH, metrics_endpoint),
    ]


def ops_app(public: Starlette) -> Starlette:
    """The probes-and-metrics app of ``public`` (the app from ``create_app``): same state,
    no lifespan of its own (the public app's opens and closes the connections)."""
    app = Starlette(routes=routes())
    app.state.kameng = state_of(public)
    return app
