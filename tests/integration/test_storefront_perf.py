"""The storefront's outgoing HTTP on a real server: connections are kept, not churned."""

from __future__ import annotations

import asyncio

import httpx
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
    """Two bursts of HTTP_CONNECTIONS + 16 calls (as HQ's notifications or a shop's
    payment calls come under load): the first opens at most HTTP_CONNECTIONS connections
    (httpcore's pool costs O(n²) per request in them), the second opens none (all are kept
    alive). With httpx's defaults (100 connections) the first opened all 80."""
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
                calls = (client.get(url) for _ in range(HTTP_CONNECTIONS + 16))
                for r in await asyncio.gather(*calls):
                    assert r.status_code == 200
                per_burst.append(opened[0] - before)
            return per_burst

    try:
        first, second = asyncio.run(bursts())
    finally:
        server.stop()
    assert first <= HTTP_CONNECTIONS
    assert second == 0, f"{second} connections opened again in the second burst"


def test_calls_past_the_limit_wait_outside_httpcores_pool_and_all_complete():
    """120 calls at once: all answered, and httpcore's pool never holds a queued request
    (each one there is rescanned against every connection on every pool event). With
    httpx's defaults (100 connections) 20 queued there."""

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.05)
        return PlainTextResponse("ok")

    port = free_port()
    server = ServerThread(Starlette(routes=[Route("/", slow)]), port)
    server.start()

    async def burst() -> int:
        async with http_client() as client:
            pool = client._transport._pool  # type: ignore[attr-defined]
            most = [0]
            assign = pool._assign_requests_to_connections

            def watching():
                closing = assign()  # what is still queued once it has assigned
                most[0] = max(most[0], sum(1 for r in pool._requests if r.is_queued()))
                return closing

            pool._assign_requests_to_connections = watching
            url = f"http://127.0.0.1:{port}/"
            for r in await asyncio.gather(*(client.get(url) for _ in range(120))):
                assert r.status_code == 200
            return most[0]

    try:
        queued = asyncio.run(burst())
    finally:
        server.stop()
    assert queued == 0, f"up to {queued} requests queued in httpcore's pool"


def test_a_call_waiting_for_a_connection_past_its_pool_timeout_is_a_pool_timeout():
    """The wait before httpcore's pool keeps the call's pool timeout (callers map
    httpx errors to "HQ unreachable" and retry; a wait must never be endless)."""

    async def slower(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.5)
        return PlainTextResponse("ok")

    port = free_port()
    server = ServerThread(Starlette(routes=[Route("/", slower)]), port)
    server.start()

    async def burst() -> list[object]:
        async with http_client() as client:
            timeout = httpx.Timeout(5, pool=0.1)
            url = f"http://127.0.0.1:{port}/"
            return await asyncio.gather(
                *(client.get(url, timeout=timeout) for _ in range(HTTP_CONNECTIONS + 6)),
                return_exceptions=True)

    try:
        results = asyncio.run(burst())
    finally:
        server.stop()
    answered = [r for r in results if isinstance(r, httpx.Response)]
    timed_out = [r for r in results if isinstance(r, httpx.PoolTimeout)]
    assert len(answered) == HTTP_CONNECTIONS
    assert len(timed_out) == 6
