"""Run HQ and a sub-site for real on loopback: used by integration tests and the
benchmark. Each stack gets fresh databases, keys and a license.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kameng.contracts import invitation
from kameng.contracts.events import decisions_stream, orders_stream
from kameng.contracts.hq_auth import (
    REGISTRY_MOUNT,
    SiteCredential,
    new_site_api_token,
    token_digest,
)
from kameng.contracts.license_token import (
    LicenseClaims,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.siteconfig import DEFAULT_ROLES, PERMISSIONS, SiteConfig
from kameng_storefront.app import KEEP_ALIVE_S, create_app, create_ops_app
from kameng_storefront.config import Settings
from kameng_storefront.crypto import DataCipher

from .net import HTTP_TIMEOUT, free_port
from .wait import wait_for as _wait_for

DEFAULT_PASSWORD = "correct-horse-battery"
HQ_ADMIN = "admin@hq.local"


class ServerThread:
    """uvicorn in a background thread (its own event loop); ``stop()`` shuts it down.

    With ``ops_port``, the app's probes and metrics are served on that port from the same
    loop, as ``kameng storefront`` does (they share the app's connections, which belong to
    one loop)."""

    def __init__(self, app: Starlette, port: int, ops_port: int | None = None) -> None:
        self.port = port
        # As in production (kameng_storefront.app.serve): forwarded headers are the
        # TrustedProxies middleware's business, not uvicorn's.
        common: dict[str, Any] = dict(host="127.0.0.1", log_level="warning",
                                      access_log=False, proxy_headers=False,
                                      timeout_keep_alive=KEEP_ALIVE_S)
        self.servers = [uvicorn.Server(uvicorn.Config(app, port=port, lifespan="on",
                                                      **common))]
        if ops_port is not None:
            self.servers.append(uvicorn.Server(uvicorn.Config(
                create_ops_app(app), port=ops_port, lifespan="off", **common)))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            await asyncio.gather(*(s.serve() for s in self.servers))

        asyncio.run(main())

    def start(self, timeout: float = 30) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not all(s.started for s in self.servers):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        for s in self.servers:
            s.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def temp_database(admin_dsn: str, prefix: str) -> Iterator[str]:
    """A fresh database (dropped afterwards); yields its DSN."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@dataclass
class Stack:
    site: str
    hq_url: str
    shop_url: str
    hq_app: Starlette
    shop_app: Starlette
    hq_dsn: str
    shop_dsn: str
    redis_url: str
    signing_key: Any
    token_file: Path
    credentials_dir: Path  # HQ's mounted site-credential registry
    api_token: str  # the site's HQ API token
    members: dict[str, str] = field(default_factory=dict)  # role → email
    password: str = DEFAULT_PASSWORD
    # Every replica of the shop (one database); shop_app is the first, the one HQ notifies.
    shop_apps: list[Starlette] = field(default_factory=list)
    shop_urls: list[str] = field(default_factory=list)  # of shop_apps, in that order
    shop_session_secret: str = ""
    hq_bootstrap_password: str = ""
    config: SiteConfig | None = None

    def invite(self, email: str, **kwargs: Any) -> str:
        """A fresh invitation token for the member with ``email``, minted as
        ``kubectl kameng invite`` does (from the site's session secret)."""
        assert self.config is not None
        m = next(m for m in self.config.members if m.email == email)
        return invitation.issue(self.shop_session_secret, self.site, m.name, m.email, **kwargs)

    def publish_credential(self, state: str = "active", token: str | None = None,
                           urls: list[str] | None = None, site: str | None = None,
                           categories: list[str] | None = None,
                           regions: list[str] | None = None) -> None:
        """Write the site's registry entry as the operator (and the kubelet) would;
        ``categories``/``regions``: the License scope the operator publishes."""
        site = site or self.site
        write_credential(self.credentials_dir, SiteCredential(
            site=site, sha256=token_digest(token or self.api_token),
            createdAt=datetime.now(UTC).isoformat(), state=state,  # type: ignore[arg-type]
            urls=[self.shop_url] if urls is None else urls, categories=categories,
            regions=regions))

    def api_headers(self, license_token: str | None = None) -> dict[str, str]:
        """What the shop sends HQ (its token; the license only when given)."""
        from kameng.contracts.hq_api import site_headers

        return site_headers(self.site, self.api_token, license_token)
    # The ops ports (probes, metrics), never the public ones.
    hq_ops_url: str = ""
    shop_ops_url: str = ""

    def claims(self, **overrides: Any) -> LicenseClaims:
        now = datetime.now(UTC)
        base: dict[str, Any] = dict(
            site=self.site, plan="flagship", categories=["game", "mobile"], regions=["CN-31"],
            nbf=now - timedelta(hours=1), exp=now + timedelta(days=30),
            graceUntil=now + timedelta(days=33), seq=1,
        )
        base.update(overrides)
        return LicenseClaims(**base)

    def write_license(self, token: str) -> None:
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text(token, encoding="utf-8")
        tmp.replace(self.token_file)  # atomic, like a kubelet Secret update


def write_credential(directory: Path, entry: SiteCredential) -> None:
    """One registry file, replaced atomically like the kubelet's Secret volume update."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{entry.site}.tmp"
    tmp.write_text(entry.to_json(), encoding="utf-8")
    tmp.replace(directory / entry.site)


def mount_secret(secret: dict[str, Any] | None, directory: Path) -> None:
    """What the kubelet does for a Secret volume: one file per key, changed files replaced
    atomically, files of removed keys gone (a missing Secret empties the directory)."""
    import base64

    directory.mkdir(parents=True, exist_ok=True)
    data = (secret or {}).get("data") or {}
    for key, value in data.items():
        tmp = directory / f".{key}.tmp"
        tmp.write_bytes(base64.b64decode(value))
        tmp.replace(directory / key)
    for path in directory.iterdir():
        if not path.name.startswith(".") and path.name not in data:
            path.unlink()


def site_config(site: str, hq_url: str, public_key: str, **overrides: Any) -> SiteConfig:
    # The standard policy plus an all-powerful owner and a role with no permission at all.
    roles: dict[str, list[str]] = {**DEFAULT_ROLES, "owner": list(PERMISSIONS), "viewer": []}
    data: dict[str, Any] = dict(
        site=site, display_name=f"{site} 分站",
        branding={"title": f"{site} 卡盟", "primaryColor": "#1f6feb", "locale": "zh-CN"},
        categories=["game", "mobile"], regions=["CN-31"],
        price_rules=[{"category": "game", "markup_percent": "10"},
                     {"category": "mobile", "markup_percent": "5"}],
        hidden_products=[], roles=roles, mode="normal", hq_url=hq_url,
        hq_public_key=public_key, payments={"methods": ["sandbox"]},
        members=[{"name": r, "email": f"{r}@{site}.example", "role": r} for r in roles],
    )
    data.update(overrides)
    return SiteConfig.model_validate(data)


def hq_settings_for(dsn: str, redis_url: str, url: str, public_key: str,
                    credentials_dir: Path, master: str | None = None,
                    pool_size: int = 20, admin_password: str = DEFAULT_PASSWORD,
                    overrides: dict[str, Any] | None = None) -> Settings:
    return Settings(
        mode="hq", site=SiteConfig(site="hq", display_name="HQ"), database_url=dsn,
        redis_url=redis_url, session_secret=secrets.token_hex(32),
        data_keys=DataCipher.generate_spec("hq1"), public_url=url,
        hq_master_secret=master or secrets.token_hex(32), hq_public_key=public_key,
        admin_password=admin_password, pool_size=pool_size,
        site_credentials_dir=str(credentials_dir),
        # Tests pay through the sandbox: enabled explicitly, as a person must.
        **{"sandbox_payments": True, **(overrides or {})},
    )


@contextmanager
def run_hq(pg_admin_dsn: str, redis_url: str, public_key: str, credentials_dir: Path,
           overrides: dict[str, Any] | None = None) -> Iterator[tuple[str, str]]:
    """HQ alone (fresh database) verifying licenses with ``public_key`` and reading the
    site-credential registry from ``credentials_dir``; yields (url, database DSN).
    ``overrides`` replace settings (e.g. ``kubeconfig`` and ``onboarding_mode``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with temp_database(pg_admin_dsn, "kameng_hq") as dsn:
        server = ServerThread(create_app(hq_settings_for(dsn, redis_url, url, public_key,
                                                         credentials_dir,
                                                         overrides=overrides)), port)
        server.start()
        try:
            yield url, dsn
        finally:
            server.stop()


def _drop_site_streams(redis_url: str, site: str) -> None:
    """The site's order and decision streams under their real names, and its own keys
    (``site:<site>:*``: visit counts, throttles): left behind (a new site name per stack),
    they pile up run after run, and every worker on the default prefix (the demo's
    settlement and risk workers) would read the streams as live orders."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        r.delete(orders_stream(site), decisions_stream(site),
                 *r.scan_iter(f"site:{site}:*", count=1000))
    finally:
        r.close()


@contextmanager
def run_stack(
    pg_admin_dsn: str, redis_url: str, tmp_dir: Path, *, site: str | None = None,
    config_overrides: dict[str, Any] | None = None, license_overrides: dict[str, Any] | None = None,
    pool_size: int = 20, shop_overrides: dict[str, Any] | None = None,
    set_passwords: bool = True, hq_overrides: dict[str, Any] | None = None,
    shop_replicas: int = 1, shop_hq_url: str | None = None, signing_key: Any = None,
) -> Iterator[Stack]:
    """HQ and a shop. With ``set_passwords`` (the default), HQ's admin has replaced its
    bootstrap password with :data:`DEFAULT_PASSWORD` and every member has redeemed an
    invitation with it, as people do on a new site; without, every account is as new.
    ``shop_replicas`` > 1 runs more instances of the shop on the same database (as a
    Deployment's replicas); ``shop_hq_url`` points the shop at something in front of HQ
    (e.g. a :class:`HoldingProxy`) instead of HQ itself. ``signing_key``: HQ's license
    key to trust (e.g. the operator's, so the shop runs on the tokens it issues)."""
    site = site or f"t{secrets.token_hex(4)}"
    bootstrap = f"bootstrap-{secrets.token_hex(8)}"
    shop_session = secrets.token_hex(32)
    key = signing_key or generate_signing_key()
    master = secrets.token_hex(32)
    hq_port, shop_port = free_port(), free_port()
    hq_ops_port, shop_ops_port = free_port(), free_port()
    hq_url, shop_url = f"http://127.0.0.1:{hq_port}", f"http://127.0.0.1:{shop_port}"
    token_file = tmp_dir / f"{site}-license.token"
    credentials_dir = tmp_dir / f"{site}-site-credentials"
    api_token = new_site_api_token()
    with temp_database(pg_admin_dsn, "kameng_hq") as hq_dsn, \
            temp_database(pg_admin_dsn, f"kameng_{site}") as shop_dsn:
        cfg = site_config(site, hq_url, public_key_to_b64(key), **(config_overrides or {}))
        hq_settings = hq_settings_for(hq_dsn, redis_url, hq_url, public_key_to_b64(key),
                                      credentials_dir, master, pool_size,
                                      admin_password=bootstrap, overrides=hq_overrides)
        shop_settings = Settings(
            mode="subsite", site=cfg, database_url=shop_dsn, redis_url=redis_url,
            session_secret=shop_session, data_keys=DataCipher.generate_spec("s1"),
            public_url=shop_url, hq_url=shop_hq_url or hq_url, hq_public_url=hq_url,
            license_token_file=str(token_file), hq_api_token=api_token,
            catalog_sync_seconds=1.0, license_recheck_seconds=0.2, pool_size=pool_size,
            **(shop_overrides or {}),
        )
        stack = Stack(
            site=site, hq_url=hq_url, shop_url=shop_url, hq_app=Starlette(),
            shop_app=Starlette(), hq_dsn=hq_dsn, shop_dsn=shop_dsn,
            redis_url=redis_url, signing_key=key, token_file=token_file,
            credentials_dir=credentials_dir, api_token=api_token,
            members={m.role: m.email for m in cfg.members}, shop_session_secret=shop_session,
            hq_bootstrap_password=bootstrap, config=cfg,
            hq_ops_url=f"http://127.0.0.1:{hq_ops_port}",
            shop_ops_url=f"http://127.0.0.1:{shop_ops_port}",
        )
        # The license and the site's registry entry exist before the shop starts, as the
        # operator's Secrets would.
        stack.publish_credential()
        stack.write_license(sign_token(stack.claims(**(license_overrides or {})), key))
        stack.hq_app = create_app(hq_settings)
        stack.shop_apps = [create_app(shop_settings) for _ in range(shop_replicas)]
        stack.shop_app = stack.shop_apps[0]
        ports = [shop_port, *(free_port() for _ in stack.shop_apps[1:])]
        stack.shop_urls = [f"http://127.0.0.1:{p}" for p in ports]
        servers = [ServerThread(stack.hq_app, hq_port, hq_ops_port),
                   ServerThread(stack.shop_app, shop_port, shop_ops_port),
                   *(ServerThread(app, port, free_port())
                     for app, port in zip(stack.shop_apps[1:], ports[1:], strict=True))]
        try:
            for s in servers:
                s.start()
            if set_passwords:
                staff_client(hq_url, HQ_ADMIN, bootstrap, replace_bootstrap_with=DEFAULT_PASSWORD
                             ).close()
                for m in cfg.members:
                    redeem_invitation(shop_url, stack.invite(m.email), DEFAULT_PASSWORD).close()
            yield stack
        finally:
            for s in reversed(servers):
                s.stop()
            _drop_site_streams(redis_url, site)


@contextmanager
def run_site_from_cluster(kubectl: Any, site: str, hq_url: str, root: Path
                          ) -> Iterator[str]:
    """The shop of a SubSite the operator provisioned, run locally from what it wrote
    into the site's namespace (ConfigMap and Secrets, as the kubelet would mount them);
    kwok's pods run nothing. Yields its URL."""
    import base64
    import json

    from kameng.contracts import pod
    from kameng_storefront.config import load_settings

    ns = f"kameng-{site}"
    cm = json.loads(kubectl("get", "configmap", pod.CONFIGMAP_NAME, "-n", ns, "-o",
                            "json").stdout)
    config_file = root / "config" / pod.CONFIGMAP_KEY
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(cm["data"][pod.CONFIGMAP_KEY], encoding="utf-8")
    secrets_root = root / "secrets"
    for name in pod.SITE_SECRETS:
        secret = json.loads(kubectl("get", "secret", name, "-n", ns, "-o", "json").stdout)
        directory = Path(pod.mount_path(name, str(secrets_root)))
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in (secret.get("data") or {}).items():
            (directory / key).write_bytes(base64.b64decode(value))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = load_settings("subsite", env={
        pod.SECRETS_ROOT_ENV: str(secrets_root), pod.SITE_CONFIG_FILE_ENV: str(config_file),
        "KAMENG_HQ_URL": hq_url, pod.PUBLIC_URL_ENV: url})
    server = ServerThread(create_app(settings), port)
    server.start()
    try:
        yield url
    finally:
        server.stop()


class HoldingProxy:
    """An HTTP proxy in front of HQ that can hold requests to chosen paths until released,
    counting them, or answer some with an error (``fail_with``): makes "two callers at
    once" windows wide and observable, and failures selective, in tests of real apps
    without touching HQ or the shop. ``target`` may be set after start."""

    def __init__(self, hold_paths: tuple[str, ...] = ()) -> None:
        self.target = ""
        self.hold_paths = hold_paths
        self.released = threading.Event()
        self.released.set()
        self.arrivals: list[tuple[str, bytes]] = []
        # (path, body) → a status to answer instead of forwarding (a failing gateway).
        self.fail_with: Callable[[str, bytes], int | None] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ServerThread(Starlette(routes=[
            Route("/{path:path}", self._forward, methods=["GET", "POST"])]), self.port)

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        if path in self.hold_paths:
            self.arrivals.append((path, body))
            # The test releases from its own thread: wait for it off the event loop.
            await asyncio.to_thread(self.released.wait, 60)
        if self.fail_with and (status := self.fail_with(path, body)):
            return Response("<html>gateway</html>", status_code=status, media_type="text/html")
        if not self.target:
            return Response(status_code=502)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",
                                                                                   "content-length")}
        async with httpx.AsyncClient(timeout=60) as c:
            r = await c.request(request.method, self.target + path, content=body,
                                params=request.query_params, headers=headers)
        return Response(r.content, status_code=r.status_code, headers={
            k: v for k, v in r.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")})

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def __enter__(self) -> HoldingProxy:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._server.stop()


# --- HTTP helpers shared by tests and the benchmark ----------------------------------------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def forbidden_messages() -> set[str]:
    """The permission-refused message in every shipped language (the page shows one)."""
    import json
    from importlib.resources import files

    loc = files("kameng_storefront") / "locales"
    return {json.loads((loc / f.name).read_text("utf-8"))["forbidden"]
            for f in loc.iterdir() if f.name.endswith(".json")}


def assert_forbidden_page(page: str) -> None:
    """A 403 for a missing permission: the error card with the "forbidden" message — not
    any error page (a CSRF, license or not-found page must not pass for it)."""
    assert 'id="error"' in page, page[:500]
    assert any(m in page for m in forbidden_messages()), page[:2000]


def csrf_from(html: str) -> str:
    m = _CSRF.search(html)
    if not m:
        raise AssertionError("page has no CSRF field")
    return m.group(1)


def staff_client(base_url: str, email: str, password: str = DEFAULT_PASSWORD, *,
                 replace_bootstrap_with: str | None = None) -> httpx.Client:
    """A logged-in back-office client (HQ admin or a sub-site member). HQ's admin logging
    in with its bootstrap password must choose its own first: ``replace_bootstrap_with``."""
    c = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_from(c.get("/admin/login").text)
    r = c.post("/admin/login", data={"csrf": token, "email": email, "password": password})
    if r.status_code != 303:
        raise AssertionError(f"login of {email} failed: HTTP {r.status_code}")
    if r.headers["location"] == "/admin/password":
        if replace_bootstrap_with is None:
            raise AssertionError(f"{email} must replace its bootstrap password first")
        change_password(c, password, replace_bootstrap_with)
    return c


def customer_client(base_url: str, email: str, password: str = DEFAULT_PASSWORD, *,
                    sign_up: bool = True) -> httpx.Client:
    """A shop customer with their own cookies, signed up (or logged in) with ``email``."""
    c = httpx.Client(base_url=base_url, timeout=30)
    path = "/account/signup" if sign_up else "/account/login"
    data = {"csrf": csrf_from(c.get(path).text), "email": email, "password": password}
    if sign_up:
        data["confirm"] = password
    r = c.post(path, data=data)
    if r.status_code != 303:
        raise AssertionError(f"customer {email} not in: HTTP {r.status_code}")
    return c


def change_password(client: httpx.Client, current: str, new: str) -> httpx.Response:
    """Self-service change through the password page; asserts it succeeded."""
    page = client.get("/admin/password")
    r = client.post("/admin/password", data={"csrf": csrf_from(page.text), "current": current,
                                             "new": new, "confirm": new})
    if r.status_code != 303:
        raise AssertionError(f"password change failed: HTTP {r.status_code}")
    return r


def redeem_invitation(base_url: str, token: str, password: str) -> httpx.Client:
    """Open an invitation link, set ``password``; returns the now logged-in client."""
    c = httpx.Client(base_url=base_url, timeout=30)
    path = httpx.URL(invitation.invitation_url(base_url, token)).raw_path.decode()
    page = c.get(path)
    if page.status_code != 200:
        raise AssertionError(f"invitation page: HTTP {page.status_code}")
    r = c.post(path, data={"csrf": csrf_from(page.text), "password": password,
                           "confirm": password})
    if r.status_code != 303:
        raise AssertionError(f"invitation not redeemed: HTTP {r.status_code}")
    return c


def admin_csrf(client: httpx.Client) -> str:
    return csrf_from(client.get("/admin").text)


def hq_add_product(
    hq: httpx.Client, pid: str, category: str, face: str, cost: str, region: str = ""
) -> None:
    r = hq.post("/admin/products", data={
        "csrf": admin_csrf(hq), "id": pid, "name_zh": f"{pid} 卡", "name_en": f"{pid} card",
        "category": category, "region": region, "face_value": face, "cost": cost,
    })
    if r.status_code != 303:
        raise AssertionError(f"product {pid} not saved: HTTP {r.status_code}")


def hq_import_keys(hq: httpx.Client, product: str, keys: list[str]) -> str:
    """Upload keys as a CSV file through the admin form; returns the result message."""
    body = "secret\n" + "\n".join(keys) + "\n"
    r = hq.post(
        "/admin/keys", data={"csrf": admin_csrf(hq), "product": product},
        files={"file": ("keys.csv", body.encode(), "text/csv")},
    )
    if r.status_code != 303:
        raise AssertionError(f"key import failed: HTTP {r.status_code}")
    return r.headers["location"]


def record_paid_payment(stack: Stack, order_id: str, amount_fen: int,
                        currency: str = "CNY") -> str:
    """HQ's record of a paid payment for ``order_id`` of the stack's site, written straight
    into HQ's database (setup for tests that call the fulfilment API directly)."""
    pid = "P" + secrets.token_hex(10)
    with psycopg.connect(stack.hq_dsn) as conn:
        conn.execute(
            "INSERT INTO payments (id, site, order_id, amount_fen, currency, status,"
            " notify_url, return_url, paid_at, notified_at)"
            " VALUES (%s, %s, %s, %s, %s, 'paid', %s, %s, now(), now())",
            (pid, stack.site, order_id, amount_fen, currency,
             stack.shop_url + "/api/payments/notify", stack.shop_url + "/"))
    return pid


def wait_for(predicate: Any, timeout: float = 15, interval: float = 0.1) -> Any:
    """Kept for the storefront tests' call sites; the one implementation is
    :func:`tests.support.wait.wait_for` (a deadline, never a fixed sleep)."""
    return _wait_for(predicate, timeout=timeout, interval=interval)


def buy(stack: Stack, shop: httpx.Client, product: str, contact: str,
        **form: str) -> tuple[str, str]:
    """Check ``product`` out on the shop as a customer would (product page, then the
    checkout form); returns (order id, HQ pay URL)."""
    token = csrf_from(shop.get(f"/p/{product}").text)
    r = shop.post("/checkout", data={"csrf": token, "product": product, "contact": contact,
                                     **form})
    if r.status_code != 303:
        raise AssertionError(f"checkout of {product}: HTTP {r.status_code} {r.text[:300]}")
    pay_url = r.headers["location"]
    with psycopg.connect(stack.shop_dsn) as conn:
        row = conn.execute("SELECT id FROM orders WHERE pay_url = %s", (pay_url,)).fetchone()
    assert row is not None
    return row[0], pay_url


def pay(pay_url: str) -> str:
    """Pay on HQ's sandbox page like the buyer; returns where HQ sends them back."""
    with httpx.Client(timeout=HTTP_TIMEOUT) as payer:
        r = payer.post(pay_url, data={"csrf": csrf_from(payer.get(pay_url).text)})
    if r.status_code != 303:
        raise AssertionError(f"sandbox payment: HTTP {r.status_code}")
    return r.headers["location"]


def order_status(stack: Stack, order_id: str) -> str | None:
    with psycopg.connect(stack.shop_dsn) as conn:
        row = conn.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
    return row[0] if row else None


def _write_file(root: Path, rel: str, value: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(value, encoding="utf-8")


@dataclass
class ProcessStack:
    hq_url: str
    shop_url: str
    shop_ops_url: str
    shop_dsn: str
    pids: dict[str, int]  # "shop" / "hq" → process id


def start_process_stack(
    stack: ExitStack, admin_dsn: str, redis_url: str, tmp: Path, *, workers: int = 1,
    site: str = "bench", password: str = DEFAULT_PASSWORD, hq_workers: int = 1,
) -> ProcessStack:
    """HQ and a sub-site as ``kameng storefront`` processes (as in a pod: configuration
    from mounted files), the sub-site with ``workers`` worker processes and HQ with
    ``hq_workers``; stopped when ``stack`` closes. HQ's admin's bootstrap password is
    ``password``."""
    key, master = generate_signing_key(), os.urandom(16).hex()
    hq_port, shop_port = free_port(), free_port()
    hq_url, shop_url = f"http://127.0.0.1:{hq_port}", f"http://127.0.0.1:{shop_port}"
    hq_dsn = stack.enter_context(temp_database(admin_dsn, f"kameng_{site}hq"))
    shop_dsn = stack.enter_context(temp_database(admin_dsn, f"kameng_{site}site"))
    now = datetime.now(UTC)
    token = sign_token(
        LicenseClaims(
            site=site,
            categories=["game"],
            regions=["CN-31"],
            nbf=now - timedelta(hours=1),
            exp=now + timedelta(days=1),
            graceUntil=now + timedelta(days=2),
            seq=1,
        ),
        key,
    )
    hq, shop = tmp / "hq", tmp / "shop"
    for root, dsn, kind in ((hq, hq_dsn, "hq"), (shop, shop_dsn, "subsite")):
        _write_file(root, "storefront-db/dsn", dsn)
        _write_file(root, "storefront-redis/url", redis_url)
        _write_file(root, "storefront-keys/session-secret", os.urandom(24).hex())
        _write_file(root, "storefront-keys/data-key", DataCipher.generate_spec())
        if kind == "hq":  # only HQ's admin has a bootstrap password
            _write_file(root, "storefront-keys/admin-password", password)
            _write_file(root, "hq/master-secret", master)
            _write_file(root, "hq/public-key", public_key_to_b64(key))
    _write_file(shop, "config/site.json",
                site_config(site, hq_url, public_key_to_b64(key)).to_json())
    api_token = new_site_api_token()
    _write_file(shop, "storefront-keys/hq-api-token", api_token)
    # HQ checks it against its mounted site-credential registry.
    _write_file(hq, f"{REGISTRY_MOUNT}/{site}", SiteCredential(
        site=site, sha256=token_digest(api_token), createdAt=now.isoformat(),
        urls=[shop_url]).to_json())
    _write_file(shop, "license/token", token)
    ops_ports = {"hq": free_port(), "subsite": free_port()}
    pids: dict[str, int] = {}
    for mode, port, root, url in (
        ("hq", hq_port, hq, hq_url),
        ("subsite", shop_port, shop, shop_url),
    ):
        env = {
            **os.environ,
            "KAMENG_SECRETS_ROOT": str(root),
            "KAMENG_PUBLIC_URL": url,
            "KAMENG_SITE_CONFIG_FILE": str(root / "config/site.json"),
            "KAMENG_LOG_LEVEL": "WARNING",
            "KAMENG_CATALOG_SYNC_SECONDS": "1",
            # The benchmark pays through HQ's sandbox: enabled explicitly, as tests do.
            "KAMENG_SANDBOX_PAYMENTS": "enabled",
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kameng.cli.main",
                "storefront",
                "--mode",
                mode,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ops-port",
                str(ops_ports[mode]),
                "--workers", str(workers if mode == "subsite" else hq_workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(lambda p=proc: (p.terminate(), p.wait(timeout=20)))
        pids["shop" if mode == "subsite" else "hq"] = proc.pid

    def ready(u: str) -> bool:
        try:
            return httpx.get(f"{u}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(lambda: all(ready(f"http://127.0.0.1:{p}") for p in ops_ports.values()),
             timeout=60, interval=0.3)
    return ProcessStack(hq_url, shop_url, f"http://127.0.0.1:{ops_ports['subsite']}", shop_dsn,
                      pids)
