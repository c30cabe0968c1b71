"""`kameng storefront` started as the operator's Deployment starts it: config from the
ConfigMap file, secrets from files under KAMENG_SECRETS_ROOT, nothing secret in argv."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

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
from kameng_storefront.crypto import DataCipher
from tests.support.net import free_port
from tests.support.storefront import site_config, temp_database, wait_for

pytestmark = pytest.mark.integration


def _write(root: Path, rel: str, value: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value, encoding="utf-8")


def _start(mode: str, port: int, ops_port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kameng.cli.main", "storefront", "--mode", mode,
         "--host", "127.0.0.1", "--port", str(port), "--ops-port", str(ops_port)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_cli_runs_hq_and_subsite_from_mounted_files(pg_admin_dsn, redis_url, tmp_path):
    key = generate_signing_key()
    master = "m" * 64
    hq_port, shop_port = free_port(), free_port()
    hq_url, shop_url = f"http://127.0.0.1:{hq_port}", f"http://127.0.0.1:{shop_port}"
    hq_ops_port, shop_ops_port = free_port(), free_port()
    hq_ops, shop_ops = f"http://127.0.0.1:{hq_ops_port}", f"http://127.0.0.1:{shop_ops_port}"
    now = datetime.now(UTC)
    token = sign_token(LicenseClaims(
        site="clisite", categories=["game"], regions=["CN-31"], nbf=now - timedelta(hours=1),
        exp=now + timedelta(days=1), graceUntil=now + timedelta(days=2), seq=1), key)
    with temp_database(pg_admin_dsn, "kameng_clihq") as hq_dsn, \
            temp_database(pg_admin_dsn, "kameng_clisite") as shop_dsn:
        hq_root, shop_root = tmp_path / "hq", tmp_path / "shop"
        _write(hq_root, "storefront-db/dsn", hq_dsn)
        _write(hq_root, "storefront-redis/url", redis_url)
        _write(hq_root, "storefront-keys/session-secret", "s" * 48)
        _write(hq_root, "storefront-keys/data-key", DataCipher.generate_spec())
        _write(hq_root, "hq/master-secret", master)
        _write(hq_root, "hq/public-key", public_key_to_b64(key))
        cfg = site_config("clisite", hq_url, public_key_to_b64(key))
        _write(shop_root, "config/site.json", cfg.to_json())
        _write(shop_root, "storefront-db/dsn", shop_dsn)
        _write(shop_root, "storefront-redis/url", redis_url)
        _write(shop_root, "storefront-keys/session-secret", "t" * 48)
        _write(shop_root, "storefront-keys/data-key", DataCipher.generate_spec())
        api_token = new_site_api_token()
        _write(shop_root, "storefront-keys/hq-api-token", api_token)
        # HQ checks it against its mounted site-credential registry.
        _write(hq_root, f"{REGISTRY_MOUNT}/clisite", SiteCredential(
            site="clisite", sha256=token_digest(api_token), createdAt=now.isoformat(),
            urls=[shop_url]).to_json())
        _write(shop_root, "license/token", token)
        procs = [
            _start("hq", hq_port, hq_ops_port, {"KAMENG_SECRETS_ROOT": str(hq_root),
                                   "KAMENG_PUBLIC_URL": hq_url,
                                   "KAMENG_SITE_CONFIG_FILE": str(tmp_path / "none.json")}),
            _start("subsite", shop_port, shop_ops_port, {
                "KAMENG_SECRETS_ROOT": str(shop_root), "KAMENG_PUBLIC_URL": shop_url,
                "KAMENG_SITE_CONFIG_FILE": str(shop_root / "config/site.json")}),
        ]
        try:
            def ready(url: str) -> bool:
                try:
                    return httpx.get(f"{url}/readyz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(lambda: ready(hq_ops) and ready(shop_ops), timeout=30, interval=0.3)
            assert httpx.get(f"{shop_ops}/readyz").json()["licenseMode"] == "normal"
            # Probes and metrics live on the ops port only: the public port (what the
            # Ingress reaches) does not serve them.
            for base in (hq_url, shop_url):
                for path in ("/healthz", "/readyz", "/metrics"):
                    assert httpx.get(f"{base}{path}").status_code == 404, (base, path)
            assert httpx.get(f"{shop_url}/").status_code == 200
            _idle_connection_still_served(shop_port)
            # The sub-site authenticated to HQ with the derived token: a catalogue sync ran.
            wait_for(lambda: 'kameng_storefront_catalog_syncs_total{result="changed"} 1.0'
                     in httpx.get(f"{shop_ops}/metrics").text, timeout=15, interval=0.3)
        finally:
            for p in procs:
                p.terminate()
            logs = "".join(p.communicate(timeout=20)[0] for p in procs)
        for secret in (master, "s" * 48, "t" * 48, token, hq_dsn.split("password=")[-1][:20]):
            assert secret not in logs
        assert '"msg": "storefront started"' in logs


def _idle_connection_still_served(port: int) -> None:
    """A connection idle longer than a client's own keep-alive expiry (httpx: 5 s) is
    still served: the server must never be the side that closes first, or a request sent
    as it closes is lost (see KEEP_ALIVE_S)."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        for attempt in range(2):
            if attempt:
                time.sleep(6)
            sock.sendall(request)
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), (attempt, status)
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)


def _hq_files(root: Path, dsn: str, redis_url: str) -> None:
    _write(root, "storefront-db/dsn", dsn)
    _write(root, "storefront-redis/url", redis_url)
    _write(root, "storefront-keys/session-secret", "s" * 48)
    _write(root, "storefront-keys/data-key", DataCipher.generate_spec())
    _write(root, "hq/master-secret", "m" * 64)
    _write(root, "hq/public-key", public_key_to_b64(generate_signing_key()))


def test_hq_import_stocks_products_and_keys_idempotently(pg_admin_dsn, redis_url, tmp_path):
    import psycopg

    products = tmp_path / "products.json"
    products.write_text(json.dumps([
        {"id": "steam-100", "nameZh": "Steam 100 元", "nameEn": "Steam 100", "category": "game",
         "faceValue": "100.00", "cost": "92.50"},
        {"id": "cmcc-50", "category": "mobile", "region": "CN-31", "faceValue": 50,
         "cost": "49.00"}]), encoding="utf-8")
    keys = tmp_path / "keys.csv"
    keys.write_text("product_id,secret\nsteam-100,SECRET-AAA-1\nsteam-100,SECRET-AAA-2\n"
                    "cmcc-50,SECRET-BBB-1\n", encoding="utf-8")

    def hq_import(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kameng.cli.main", "storefront", "hq-import", *args],
            env={**os.environ, "KAMENG_SECRETS_ROOT": str(tmp_path / "hq"),
                 "KAMENG_SITE_CONFIG_FILE": str(tmp_path / "none.json")},
            capture_output=True, text=True, timeout=60, check=False)

    with temp_database(pg_admin_dsn, "kameng_cliimport") as dsn:
        _hq_files(tmp_path / "hq", dsn, redis_url)
        first = hq_import("--products", str(products), "--keys", str(keys))
        assert first.returncode == 0, first.stderr
        assert "products saved: 2; card keys imported: 3, duplicates skipped: 0" in first.stdout
        again = hq_import("--products", str(products), "--keys", str(keys))
        assert again.returncode == 0, again.stderr
        assert "card keys imported: 0, duplicates skipped: 3" in again.stdout
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT id, category, region, face_value_fen, cost_fen"
                                " FROM products ORDER BY id").fetchall()
            assert rows == [("cmcc-50", "mobile", "CN-31", 5000, 4900),
                            ("steam-100", "game", "", 10000, 9250)]
            stored = conn.execute("SELECT count(*), bool_and(secret_enc NOT LIKE '%SECRET-%')"
                                  " FROM card_keys WHERE status = 'available'").fetchone()
            assert stored == (3, True)  # encrypted at rest
        # A key for a product HQ does not sell is refused, and nothing of the file lands.
        keys.write_text("nope-1,SECRET-CCC-1\nsteam-100,SECRET-AAA-3\n", encoding="utf-8")
        bad = hq_import("--keys", str(keys))
        assert bad.returncode == 2
        assert "unknown product nope-1" in bad.stderr
        assert "SECRET-" not in bad.stderr + bad.stdout
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM card_keys").fetchone() == (3,)
