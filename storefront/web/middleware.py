"""Pure ASGI middleware shared by both modes: request metrics, the license gate, the
trusted-proxy client address and the request body limit."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kameng.contracts.hq_api import NOTIFY_PATH

from ..state import state_of
from .forwarded import Network, resolve_client
from .render import render

# Paths served whatever the license says: payment notifications of orders placed earlier are
# still recorded. (Probes and metrics are not on the public app at all: see probes.py.)
ALWAYS_OPEN = (NOTIFY_PATH,)

class TrustedProxies:
    """Sets the ASGI client address (and scheme) from X-Forwarded-For/-Proto, believing
    them only from the configured proxies (``KAMENG_TRUSTED_PROXIES``, default none).
    Replaces uvicorn's ``--forwarded-allow-ips``, which the CLI leaves off."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and self.trusted and client:
            headers = scope.get("headers") or []
            xff = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            host = resolve_client(client[0], xff, self.trusted)
            if host != client[0]:
                scope = {**scope, "client": (host, 0)}
                proto = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-proto"]
                if proto and proto[-1].strip().lower() in ("http", "https"):
                    scope["scheme"] = proto[-1].strip().lower()
        await self.app(scope, receive, send)


#: Forms that take files; every other path gets the small limit.
UPLOAD_PATHS = frozenset({"/admin/keys"})
# Support tickets carry attachments (up to 3 × 2 MiB, base64 in HQ's API): the partner's
# form and reply (shop) and the ticket API (HQ).
UPLOAD_PATTERN = re.compile(r"^(/admin/tickets(/\d+/reply)?|/api/v1/tickets(/\d+/messages)?)$")


class RejectNul:
    """400 for a NUL character in the path or the query string: no id, name or search
    term has one, and PostgreSQL text refuses it (a 500 deep in a query otherwise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                await _too_large(scope, receive, send, 400, "bad request")
                return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 to a request body over the limit, announced (Content-Length) or
    streamed (chunked): the app never buffers more than the limit. The staff upload
    forms (:data:`UPLOAD_PATHS`: HQ's card-key CSV import) get the larger ``upload_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes

    def limit_for(self, path: str) -> int:
        return (self.upload_bytes if path in UPLOAD_PATHS or UPLOAD_PATTERN.match(path)
                else self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for k, v in scope.get("headers") or []:
            if k == b"content-length":
                try:
                    announced = int(v)
                except ValueError:
                    await _too_large(scope, receive, send, 400, "bad Content-Length")
                    return
                if announced > limit:
                    await _too_large(scope, receive, send, 413, "request body too large")
                    return
        seen = 0
        started = False

        async def _receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def _send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(scope, receive, send, 413, "request body too large")


async def _too_large(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
    """A plain refusal before the app runs (413, 400)."""
    # Connection: close, so a client still sending the rest of the body is not read on.
    response = PlainTextResponse(text, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)


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
