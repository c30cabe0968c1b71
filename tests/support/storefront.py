"""Run HQ and a sub-site for real on loopback: used by integration tests and the
benchmark. Each stack gets fresh databases, keys and a license.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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

from kameng.contracts.hq_auth import derive_site_api_token
from kameng.contracts.license_token import (
    LicenseClaims,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.siteconfig import DEFAULT_ROLES, PERMISSIONS, SiteConfig
from kameng_storefront.app import create_app
from kameng_storefront.config import Settings
from kameng_storefront.crypto import DataCipher

from .net import free_port
from .wait import wait_for as _wait_for

DEFAULT_PASSWORD = "correct-horse-battery"


class ServerThread:
    """uvicorn in a background thread (its own event loop); ``stop()`` shuts it down."""

    def __init__(self, app: Starlette, port: int) -> None:
        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                           lifespan="on", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 30) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
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
    members: dict[str, str] = field(default_factory=dict)  # role → email
    password: str = DEFAULT_PASSWORD

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


@contextmanager
def run_stack(
    pg_admin_dsn: str, redis_url: str, tmp_dir: Path, *, site: str | None = None,
    config_overrides: dict[str, Any] | None = None, license_overrides: dict[str, Any] | None = None,
    pool_size: int = 20, shop_overrides: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    site = site or f"t{secrets.token_hex(4)}"
    key = generate_signing_key()
    master = secrets.token_hex(32)
    hq_port, shop_port = free_port(), free_port()
    hq_url, shop_url = f"http://127.0.0.1:{hq_port}", f"http://127.0.0.1:{shop_port}"
    token_file = tmp_dir / f"{site}-license.token"
    with temp_database(pg_admin_dsn, "kameng_hq") as hq_dsn, \
            temp_database(pg_admin_dsn, f"kameng_{site}") as shop_dsn:
        cfg = site_config(site, hq_url, public_key_to_b64(key), **(config_overrides or {}))
        hq_settings = Settings(
            mode="hq", site=SiteConfig(site="hq", display_name="HQ"), database_url=hq_dsn,
            redis_url=redis_url, session_secret=secrets.token_hex(32),
            data_keys=DataCipher.generate_spec("hq1"), public_url=hq_url,
            hq_master_secret=master, hq_public_key=public_key_to_b64(key),
            admin_password=DEFAULT_PASSWORD, pool_size=pool_size,
        )
        shop_settings = Settings(
            mode="subsite", site=cfg, database_url=shop_dsn, redis_url=redis_url,
            session_secret=secrets.token_hex(32), data_keys=DataCipher.generate_spec("s1"),
            public_url=shop_url, hq_url=hq_url, license_token_file=str(token_file),
            hq_api_token=derive_site_api_token(master, site), admin_password=DEFAULT_PASSWORD,
            catalog_sync_seconds=1.0, license_recheck_seconds=0.2, pool_size=pool_size,
            **(shop_overrides or {}),
        )
        stack = Stack(
            site=site, hq_url=hq_url, shop_url=shop_url, hq_app=Starlette(),
            shop_app=Starlette(), hq_dsn=hq_dsn, shop_dsn=shop_dsn,
            redis_url=redis_url, signing_key=key, token_file=token_file,
            members={m.role: m.email for m in cfg.members},
        )
        # The license exists before the shop starts, as the operator's Secret would.
        stack.write_license(sign_token(stack.claims(**(license_overrides or {})), key))
        stack.hq_app, stack.shop_app = create_app(hq_settings), create_app(shop_settings)
        servers = [ServerThread(stack.hq_app, hq_port), ServerThread(stack.shop_app, shop_port)]
        try:
            for s in servers:
                s.start()
            yield stack
        finally:
            for s in reversed(servers):
                s.stop()


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


def staff_client(base_url: str, email: str, password: str = DEFAULT_PASSWORD) -> httpx.Client:
    """A logged-in back-office client (HQ admin or a sub-site member)."""
    c = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_from(c.get("/admin/login").text)
    r = c.post("/admin/login", data={"csrf": token, "email": email, "password": password})
    if r.status_code != 303:
        raise AssertionError(f"login of {email} failed: HTTP {r.status_code}")
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


def wait_for(predicate: Any, timeout: float = 15, interval: float = 0.1) -> Any:
    """Kept for the storefront tests' call sites; the one implementation is
    :func:`tests.support.wait.wait_for` (a deadline, never a fixed sleep)."""
    return _wait_for(predicate, timeout=timeout, interval=interval)
