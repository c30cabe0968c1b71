"""Liveness, readiness and Prometheus endpoints (both modes)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..state import state_of

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


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
    healthz_path, readyz_path, metrics_path = PROBE_PATHS
    return [
        Route(healthz_path, healthz),
        Route(readyz_path, readyz),
        Route(metrics_path, metrics_endpoint),
    ]
