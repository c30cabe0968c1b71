"""The storefront's outgoing HTTP on a real server: connections are kept, not churned."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kameng_storefront.app import HTTP_CONNECTIONS, http_client
from tests.support.net import free_port
from tests.support.storefront import ServerThread

pytestmark = pytest.mark.integration


def test_bursts_reuse_the_kept_connections_and_never_open_more_than_the_limit():
    """Two bursts of 40 calls (as HQ's notifications or a shop's payment calls come under
    load): the first opens at most HTTP_CONNECTIONS connections (httpcore's pool costs
    O(n²) per request in them), the second opens none (all are kept alive). With httpx's
    defaults (100 connections) the first opened 40."""
    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.05)
        return PlainTextResponse("ok")

    port = free_port()
    server = ServerThread(Starlette(routes=[Route("/", slow)]), port)
    server.start()

    async def bursts() -> list[int]:
        async with http_client() as client:
            # Counted where httpcore opens them (the server side cannot tell: loopback
            # ports are reused at once).
            pool = client._transport._pool  # type: ignore[attr-defined]
            opened = [0]
            create = pool.create_connection

            def counting(origin):
                opened[0] += 1
                return create(origin)

            pool.create_connection = counting
            url = f"http://127.0.0.1:{port}/"
            per_burst = []
            for _ in range(2):
                before = opened[0]
                for r in await asyncio.gather(*(client.get(url) for _ in range(40))):
                    assert r.status_code == 200
                per_burst.append(opened[0] - before)
            return per_burst

    try:
        first, second = asyncio.run(bursts())
    finally:
        server.stop()
    assert first <= HTTP_CONNECTIONS
    assert second == 0, f"{second} connections opened again in the second burst"
