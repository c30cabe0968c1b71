"""A small async Kubernetes REST client on aiohttp, with orjson for the bodies.

aiohttp (kopf's own HTTP client, so no new dependency) rather than httpx: profiled at 100
SubSites, httpx/httpcore took ~70 % of the operator's event-loop time — its pool scans
every connection per request and httpcore tries ``import sniffio`` (absent) on every
request, a full sys.path search each time. aiohttp's C parser and keep-alive pool cost a
fraction of that per request.

kopf watches; this client writes. It speaks exactly the verbs the reconciler needs
(get, server-side apply, create, merge-patch, replace, delete) and counts every write, so the
benchmark and the tests can prove that an idle operator makes none.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter

from kameng.api.kinds import resource

FIELD_MANAGER = "kameng"
USER_AGENT = "kameng-operator"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

API_WRITES = Counter(
    "kameng_api_writes_total", "Write requests the operator sent to the API server.",
    ["verb", "kind"],
)


# client-go retries a 429 ten times (rest.Request's maxRetries) honouring Retry-After.
MAX_THROTTLED_RETRIES = 10
API_THROTTLED = Counter(
    "kameng_api_throttled_total",
    "Requests the API server answered 429 (priority and fairness, storage not ready).",
    ["reason"],
)


@dataclass(frozen=True)
class Response:
    """A read response: status, headers and the whole body (read before the connection
    goes back to the pool)."""

    status_code: int
    reason_phrase: str
    headers: Any
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)


def metrics_throttled(resp: Response) -> None:
    reason = "storage" if b"initializing" in resp.content else "flowcontrol"
    API_THROTTLED.labels(reason=reason).inc()


def _retry_after(resp: Response) -> float:
    """Seconds to wait: the server's Retry-After (APF says 1), jittered so that the
    requests it rejected together do not come back together; at most 10."""
    try:
        seconds = float(resp.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(10.0, max(0.1, seconds)) * random.uniform(0.5, 1.0)  # noqa: S311


class KubeError(Exception):
    """An API error. The message carries status and reason, never a request body: the
    body of a Secret must not leak into logs through an exception."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}{': ' + detail if detail else ''}")
        self.status = status
        self.reason = reason


def path_for(api_version: str, kind: str, name: str | None = None,
             namespace: str | None = None, subresource: str | None = None) -> str:
    res = resource(kind)
    plural, namespaced = res.plural, res.namespaced
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if subresource:
        base += f"/{subresource}"
    return base


def path_of(obj: dict[str, Any]) -> str:
    md = obj["metadata"]
    return path_for(obj["apiVersion"], obj["kind"], md["name"], md.get("namespace"))


@dataclass
class _Auth:
    token: str | None = None
    token_file: Path | None = None
    _read_at: float = 0.0

    def header(self) -> dict[str, str]:
        if self.token_file is not None and time.monotonic() - self._read_at > 60:
            # Projected service-account tokens rotate; re-read them now and then.
            self.token = self.token_file.read_text().strip()
            self._read_at = time.monotonic()
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


# Requests in flight at once. The operator's ServiceAccount falls under the FlowSchema
# "service-accounts", priority level "workload-low": 100 of the default 245 concurrency
# shares, i.e. 245 of an API server's default 600 seats, of which 90% may be lent to other
# levels. What it keeps when the cluster is busy is ~24 seats: more requests than that only
# wait in APF's queues (or come back 429, retried above), so the client does not open more.
# Measured in the dev cluster (apiserver_flowcontrol_nominal_limit_seats{workload-low}=245,
# current 56 while idle); KAMENG_API_CONCURRENCY overrides it for a server with other limits.
DEFAULT_CONCURRENCY = 24
# Seconds to open a connection to the API server (TCP and TLS), not counting a request's
# wait for one of the client's own connections (see Kube._slots).
CONNECT_TIMEOUT_S = 10.0


class Kube:
    def __init__(self, base_url: str, verify: ssl.SSLContext | bool, auth: _Auth,
                 max_connections: int | None = None, counted: bool = True) -> None:
        if max_connections is None:
            max_connections = int(os.environ.get("KAMENG_API_CONCURRENCY",
                                                 DEFAULT_CONCURRENCY))
        self._auth = auth
        self._base = base_url.rstrip("/")
        self._ssl: ssl.SSLContext | bool = verify
        self._max_connections = max_connections
        # Bookkeeping clients (the operator lease) are not counted: the counter proves
        # that reconciling an unchanged world writes nothing.
        self._counted = counted
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        # aiohttp sessions belong to one event loop: made on first use inside it (a
        # client may be built before the loop runs, or used by several asyncio.run()s in
        # a row — tests and CLIs do both).
        self._sessions: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession,
                              aiohttp.ClientSession] | None = None
        self._slots: asyncio.Semaphore | None = None
        self.connect_timeout = CONNECT_TIMEOUT_S

    def _session(self, stream: bool = False) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._sessions is None or self._sessions[0] is not loop \
                or self._sessions[1].closed:
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=30.0, connect=self.connect_timeout),
                headers=self._headers)
            # Watches hold a connection each for minutes: a pool of their own, so they
            # never take the connections reconciles need.
            streams = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                headers=self._headers)
            self._sessions = (loop, http, streams)
            # Requests queue HERE for one of the pool's connections: aiohttp counts the
            # wait for a pooled connection against its connect timeout, so 1,000 sites
            # deleted at once (each reclaim a few requests) timed out in the queue and
            # were reported as an unreachable API server, thousands of times, and retried.
            self._slots = asyncio.Semaphore(self._max_connections or 1_000_000)
        return self._sessions[2 if stream else 1]

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, counted: bool = True) -> Kube:
        """In-cluster service account if present, else the kubeconfig (KUBECONFIG)."""
        token_file = SA_DIR / "token"
        if kubeconfig is None and token_file.exists():
            host = os.environ["KUBERNETES_SERVICE_HOST"]
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
            return cls(f"https://{host}:{port}", ctx, _Auth(token_file=token_file),
                       counted=counted)
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else False)
        if isinstance(verify, ssl.SSLContext) and cfg.cert_file:
            verify.load_cert_chain(cfg.cert_file, cfg.key_file)
        keys = cfg.api_key or {}
        # The key's name differs between client versions.
        token = keys.get("BearerToken") or keys.get("authorization") or ""
        token = token.removeprefix("Bearer ").strip() or None
        return cls(cfg.host, verify, _Auth(token=token), counted=counted)

    async def close(self) -> None:
        if self._sessions is not None:
            _, http, streams = self._sessions
            self._sessions = None
            await http.close()
            await streams.close()

    async def raw_get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET with query parameters (a paged, label-selected LIST)."""
        resp = await self._request("GET", path, params=params)
        self._raise_for(resp, "")
        return dict(resp.json())

    async def stream_lines(self, path: str, params: dict[str, str]) -> AsyncIterator[str]:
        """The lines of a streaming GET (a WATCH), as they arrive. Split here rather than
        by aiohttp's readline, which refuses a line longer than its buffer (one watch
        event of a large object)."""
        async with self._session(stream=True).get(
                self._base + path, params=params, headers=self._auth.header()) as resp:
            if resp.status >= 400:
                self._raise_for(Response(resp.status, resp.reason or "", resp.headers,
                                         await resp.read()), "")
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while (nl := buf.find(b"\n")) >= 0:
                    line, buf = buf[:nl], buf[nl + 1:]
                    if line.strip():
                        yield line.decode()
            if buf.strip():
                yield buf.decode()

    async def _request(self, method: str, path: str, *, body: Any = None,
                       params: dict[str, str] | None = None,
                       content_type: str = "application/json",
                       kind: str = "") -> Response:
        headers = self._auth.header()
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = orjson.dumps(body)
        if method != "GET" and self._counted:
            API_WRITES.labels(verb=method, kind=kind or "unknown").inc()
        transport_errors = throttled = 0
        url = self._base + path
        while True:
            session = self._session()
            assert self._slots is not None  # made with the session
            try:
                async with self._slots, session.request(method, url, data=content,
                                                        params=params,
                                                        headers=headers) as raw:
                    resp = Response(raw.status, raw.reason or "", raw.headers,
                                    await raw.read())
            except (aiohttp.ClientError, TimeoutError) as exc:
                transport_errors += 1
                if transport_errors == 3:
                    raise KubeError(0, "Unreachable", type(exc).__name__) from None
                await asyncio.sleep(0.2 * transport_errors)
                continue
            # 429: API Priority and Fairness rejected the request (its queues for our
            # priority level are full) or storage is re-initialising (a CRD changed).
            # Like client-go: wait as long as Retry-After says and try again, a bounded
            # number of times; the request was not executed, so a retry is safe.
            if resp.status_code != 429 or throttled == MAX_THROTTLED_RETRIES:
                return resp
            throttled += 1
            metrics_throttled(resp)
            await asyncio.sleep(_retry_after(resp))

    @staticmethod
    def _raise_for(resp: Response, kind: str) -> None:
        if resp.status_code < 400:
            return
        reason, detail = resp.reason_phrase, ""
        try:
            status = resp.json()
            reason = status.get("reason") or reason
            # Validation messages may quote submitted values; for Secrets they'd be
            # credentials, so only their reason is kept.
            if kind != "Secret":
                detail = str(status.get("message", ""))[:300]
        except ValueError:
            pass
        raise KubeError(resp.status_code, reason, detail)

    async def get(self, path: str, kind: str = "") -> dict[str, Any] | None:
        resp = await self._request("GET", path, kind=kind)
        if resp.status_code == 404:
            return None
        self._raise_for(resp, kind)
        return resp.json()

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        resp = await self._request("GET", path, params=params)
        self._raise_for(resp, "")
        return list(resp.json().get("items", []))

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the one field manager, taking over conflicting fields
        (a person's edit of a managed field is drift to undo, not an opinion to keep)."""
        kind = obj["kind"]
        resp = await self._request(
            "PATCH", path_of(obj), body=obj, kind=kind,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",  # JSON is valid YAML
        )
        self._raise_for(resp, kind)
        return resp.json()

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """POST; ``None`` when it already exists (409)."""
        kind = obj.get("kind", "")
        resp = await self._request("POST", path, body=obj, kind=kind,
                                   params={"fieldManager": FIELD_MANAGER})
        if resp.status_code == 409:
            return None
        self._raise_for(resp, kind)
        return resp.json()

    async def merge_patch(self, path: str, patch: dict[str, Any], kind: str = "") -> dict[str, Any]:
        resp = await self._request("PATCH", path, body=patch, kind=kind,
                                   params={"fieldManager": FIELD_MANAGER},
                                   content_type="application/merge-patch+json")
        self._raise_for(resp, kind)
        return resp.json()

    async def json_patch(self, path: str, ops: list[dict[str, Any]], kind: str = ""
                         ) -> dict[str, Any]:
        """RFC 6902 patch. Its ``test`` operations make a write conditional (a failed test
        is a 422), and a patch of tests only reads the object with the ``patch`` verb
        alone (HQ's renewal Role has nothing else)."""
        resp = await self._request("PATCH", path, body=ops, kind=kind,
                                   params={"fieldManager": FIELD_MANAGER},
                                   content_type="application/json-patch+json")
        self._raise_for(resp, kind)
        return resp.json()

    async def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT: optimistic concurrency through ``metadata.resourceVersion`` (409 if stale)."""
        kind = obj.get("kind", "")
        resp = await self._request("PUT", path, body=obj, kind=kind,
                                   params={"fieldManager": FIELD_MANAGER})
        self._raise_for(resp, kind)
        return resp.json()

    async def delete(self, path: str, kind: str = "") -> bool:
        """DELETE in the background; ``False`` when it was already gone."""
        resp = await self._request("DELETE", path, kind=kind,
                                   body={"propagationPolicy": "Background"})
        if resp.status_code == 404:
            return False
        self._raise_for(resp, kind)
        return True
