"""The API client queues requests for its own connections instead of failing them: a
burst far larger than its pool (1,000 sites deleted at once) waits its turn and is never
reported as an unreachable API server. Against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio

from aiohttp import web

from kameng.kube.client import Kube, _Auth


async def test_a_burst_larger_than_the_pool_waits_instead_of_failing() -> None:
    in_flight = peak = 0

    async def slow(_: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.15)
        in_flight -= 1
        return web.json_response({"kind": "ConfigMap"})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/x/configmaps/{name}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    kube = Kube(f"http://127.0.0.1:{port}", False, _Auth(token=None), max_connections=2)
    # 24 requests through 2 connections take ~1.8 s; each waits far longer than it may
    # take to connect.
    kube.connect_timeout = 0.3
    try:
        got = await asyncio.gather(*(kube.get(f"/api/v1/namespaces/x/configmaps/c{i}")
                                     for i in range(24)))
    finally:
        await kube.close()
        await runner.cleanup()
    assert [g["kind"] for g in got] == ["ConfigMap"] * 24
    assert peak <= 2  # and never more connections than the pool allows
