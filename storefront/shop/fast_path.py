"""The catalogue page's fast path: a cache hit for a visitor without a session, answered
before the middleware stack and the router do any work.

A hit is the same bytes for every such visitor (see :func:`.pages.index`), so all the
full path adds to it is cost: a Request object, the session cookie's decode, six
middleware frames and the route lookup (with the visit's Redis round trip, since batched:
``web.visit_tally``, the page was at 0.17 × the same process's ``/healthz`` in
``bench/storefront_bench.py``; 1.06 with this path, the same run's ``/healthz`` being
the ops app's Starlette with its own, lighter stack).

What the full path would do to such a request, and why answering it here is the same:

- ``TrustedProxies``, ``RejectNul``, ``BodyLimit``: only ``GET /`` with no query string and
  no body headers is taken, so there is no client address to use, no NUL and no body;
- the session: taken only without the session cookie, so the locale is the site's own,
  as :func:`~kameng_storefront.web.render.locale_of` would find it, and nothing is set;
- ``LicenseGate``: a suspended shop is never taken (the full path answers its 503);
- ``RequestMetrics``: recorded here under the route's name;
- the route: the visit is counted and the headers are :func:`.pages.index_headers`.

Everything else (a miss, a session, ``?lang=``, another path or method) goes on to the
app unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..state import AppState, state_of
from ..web.page_cache import CachedPage, etag_matches
from .kpis import count_visit
from .pages import INDEX_MEDIA_TYPE, index, index_headers, index_key

_BODY_HEADERS = (b"content-length", b"transfer-encoding")
_MAX_PREPARED = 16
Headers = tuple[tuple[bytes, bytes], ...]  # immutable: shared by every response


class CataloguePageFastPath:
    """Pure ASGI middleware: the first one of the shop's stack (see ``app.create_app``)."""

    def __init__(self, app: ASGIApp, session_cookie: str) -> None:
        self.app = app
        self._cookie = session_cookie.encode("latin-1") + b"="
        # Per page (its ETag) and locale, the raw headers of its 200 and its 304, built
        # once; and the metric children, looked up once (see Metrics.visit_counter).
        self._headers: dict[tuple[str, str], tuple[Headers, Headers]] = {}
        self._observers: dict[int, Any] = {}

    def _eligible(self, scope: Scope) -> tuple[bool, str]:
        """Whether the request may be answered here, and its If-None-Match."""
        if (scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/"
                or scope.get("query_string")):
            return False, ""
        if_none_match = ""
        for name, value in scope.get("headers") or ():
            if name == b"cookie" and self._cookie in value:
                return False, ""  # maybe a session (its locale, its writes): the full path
            if name in _BODY_HEADERS:
                return False, ""
            if name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        return True, if_none_match

    def _raw_headers(self, page: CachedPage, locale: str) -> tuple[Headers, Headers]:
        key = (page.etag, locale)
        found = self._headers.get(key)
        if found is None:
            if len(self._headers) >= _MAX_PREPARED:  # bounded like the page cache
                self._headers.clear()
            common = tuple((k.lower().encode("latin-1"), v.encode("latin-1"))
                           for k, v in index_headers(page, locale).items())
            # The order Starlette's Response gives them: its own after the route's.
            full = (*common, (b"content-length", str(len(page.body)).encode()),
                    (b"content-type", INDEX_MEDIA_TYPE.encode()))
            found = self._headers[key] = (full, common)
        return found

    def _observe(self, state: AppState, status: int, seconds: float) -> None:
        child = self._observers.get(status)
        if child is None:
            child = self._observers[status] = state.metrics.requests.labels(
                "GET", index.__name__, str(status))
        child.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        eligible, if_none_match = self._eligible(scope)
        if not eligible:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = state_of(scope["app"])
        if state.effective_mode() == "suspended":
            await self.app(scope, receive, send)
            return
        locale = state.settings.site.branding.locale
        page = state.pages.get(index_key(state, locale))
        if page is None:  # a miss renders (and fills the cache) on the full path
            await self.app(scope, receive, send)
            return
        await count_visit(state, "index")
        full, common = self._raw_headers(page, locale)
        if if_none_match and etag_matches(page.etag, if_none_match):
            status, headers, body = 304, common, b""
        else:
            status, headers, body = 200, full, page.body
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._observe(state, status, time.perf_counter() - start)
        state.metrics.page_fast_hits.inc()
