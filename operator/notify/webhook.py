"""Webhook notifier: POST the notice as JSON, with a bearer token read from a Secret."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from . import Notice, NotifyError

TokenSource = Callable[[], Awaitable[str | None]]


class WebhookNotifier:
    name = "webhook"

    def __init__(self, url: str, token: TokenSource | None = None, timeout: float = 10.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._token = token
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, notice: Notice) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": notice.id}
        if self._token is not None:
            token = await self._token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
        try:
            r = await self._client.post(self.url, content=notice.to_json(), headers=headers)
        except httpx.HTTPError as e:
            # The type only: an exception's text may echo the request (and its header).
            raise NotifyError(f"webhook unreachable ({type(e).__name__})") from None
        if r.status_code >= 300:
            raise NotifyError(f"webhook answered {r.status_code}")

    async def close(self) -> None:
        await self._client.aclose()
