"""Pure ASGI middleware shared by both modes: request metrics and the license gate."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kameng.contracts.hq_api import NOTIFY_PATH

from ..state import state_of
from .probes import PROBE_PATHS
from .render import render

# Paths served whatever the license says: probes and metrics keep the pod healthy while it
# shows the 503 page, and payment notifications of orders placed earlier are still recorded.
ALWAYS_OPEN = (*PROBE_PATHS, NOTIFY_PATH)


class LicenseGate:
    """A suspended (or unlicensed) sub-site answers 503 everywhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ALWAYS_OPEN):
            await self.app(scope, receive, send)
            return
        if state_of(scope["app"]).effective_mode() == "suspended":  # HQ is always "normal"
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
            state_of(scope["app"]).metrics.requests.labels(
                scope["method"], name, str(status["code"])
            ).observe(time.perf_counter() - start)
