"""Start HQ and every Ready sample sub-site's storefront locally, from what the operator
produced in the cluster (ConfigMap `storefront-config`, the site's Secrets, HQ's keys).

Run by `hack/demo` inside the project's virtualenv, after `hack/devenv up` exported
KUBECONFIG, KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL and KAMENG_DEVENV_DIR. Each storefront
is a process managed by `hack/devenv run`, so `hack/devenv down` stops it too. Files
holding secrets are written 0600 under the dev environment's state directory, which
`down` deletes.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from kubernetes import client, config
from psycopg import sql

from kameng.contracts.siteconfig import CONFIGMAP_KEY, CONFIGMAP_NAME
from kameng_storefront.testing import admin_csrf, hq_import_keys, staff_client

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ["KAMENG_DEVENV_DIR"]) / "storefronts"
OPERATOR_NS = os.environ.get("KAMENG_NAMESPACE", "kameng-system")
HQ_KEYS_SECRET = "kameng-hq-keys"
HQ_ADMIN = "admin@hq.local"
# (sku, zh name, en name, category, face value, HQ cost, region), within the scope of
# the sample Licenses.
PRODUCTS = [
    ("steam-100", "Steam 钱包充值卡 100 元", "Steam Wallet card ¥100", "game-cards",
     "100.00", "92.50", ""),
    ("psn-200", "PlayStation 点卡 200 元", "PlayStation Store card ¥200", "game-cards",
     "200.00", "186.00", ""),
    ("cmcc-50", "中国移动话费充值 50 元（上海）", "China Mobile top-up ¥50 (Shanghai)",
     "mobile-topup", "50.00", "49.00", "CN-31"),
]
KEYS_PER_PRODUCT = 25


def log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def kept_secret(path: Path, make) -> str:
    """A generated value that survives demo restarts (sessions and data stay valid)."""
    if not path.exists():
        write_private(path, make())
    return path.read_text()


def port_for(name: str) -> int:
    ports_file = STATE / "ports.json"
    ports = json.loads(ports_file.read_text()) if ports_file.exists() else {}
    if name not in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = s.getsockname()[1]
        write_private(ports_file, json.dumps(ports))
    return ports[name]


def start(name: str, mode: str, port: int, env: dict[str, str]) -> None:
    full = {**os.environ, **env}
    subprocess.run([str(ROOT / "hack" / "devenv"), "run", name, "--",
                    str(ROOT / ".venv" / "bin" / "kameng"), "storefront", "--mode", mode,
                    "--host", "127.0.0.1", "--port", str(port)], env=full, check=True)


def wait_ready(url: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    log_file = Path(os.environ["KAMENG_DEVENV_DIR"]) / "logs" / f"{name}.log"
    raise SystemExit(f"{name} did not become ready at {url}; see {log_file}")


def ensure_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def secret_data(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    data = core.read_namespaced_secret(name, namespace).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def start_hq(core: client.CoreV1Api) -> str:
    root = STATE / "hq" / "secrets"
    keys = secret_data(core, OPERATOR_NS, HQ_KEYS_SECRET)
    write_private(root / "hq" / "master-secret", keys["master-secret"])
    write_private(root / "hq" / "public-key", keys["public-key"])
    write_private(root / "storefront-db" / "dsn",
                  ensure_database(os.environ["KAMENG_PG_ADMIN_DSN"], "kameng_hq_demo"))
    write_private(root / "storefront-redis" / "url", os.environ["KAMENG_REDIS_URL"])
    kept_secret(root / "storefront-keys" / "session-secret", lambda: secrets.token_urlsafe(32))
    kept_secret(root / "storefront-keys" / "data-key",
                lambda: "k1:" + base64.b64encode(secrets.token_bytes(32)).decode())
    password = kept_secret(STATE / "demo-password", lambda: secrets.token_urlsafe(12))
    write_private(root / "storefront-keys" / "admin-password", password)
    port = port_for("hq")
    url = f"http://127.0.0.1:{port}"
    start("hq", "hq", port, {"KAMENG_SECRETS_ROOT": str(root), "KAMENG_PUBLIC_URL": url})
    wait_ready(url, "hq")
    hq = staff_client(url, HQ_ADMIN, password)
    catalogue = httpx.get(f"{url}/", timeout=10).text
    for sku, name_zh, name_en, category, face, cost, region in PRODUCTS:
        if sku in catalogue:
            continue
        r = hq.post("/admin/products", data={
            "csrf": admin_csrf(hq), "id": sku, "name_zh": name_zh, "name_en": name_en,
            "category": category, "region": region, "face_value": face, "cost": cost})
        if r.status_code != 303:
            raise SystemExit(f"HQ refused demo product {sku}: HTTP {r.status_code}")
        hq_import_keys(hq, sku, [f"{sku.upper()}-DEMO-{i:04d}-{secrets.token_hex(3).upper()}"
                                 for i in range(KEYS_PER_PRODUCT)])
    return url


def start_site(core: client.CoreV1Api, site: str, namespace: str, hq_url: str) -> str:
    root = STATE / site
    cm = core.read_namespaced_config_map(CONFIGMAP_NAME, namespace)
    write_private(root / "config" / "site.json", cm.data[CONFIGMAP_KEY])
    for name in ("storefront-db", "storefront-redis", "storefront-keys", "license"):
        for key, value in secret_data(core, namespace, name).items():
            write_private(root / "secrets" / name / key, value)
    password = (STATE / "demo-password").read_text()
    write_private(root / "secrets" / "storefront-keys" / "admin-password", password)
    port = port_for(f"shop-{site}")
    url = f"http://127.0.0.1:{port}"
    start(f"shop-{site}", "subsite", port, {
        "KAMENG_SECRETS_ROOT": str(root / "secrets"),
        "KAMENG_SITE_CONFIG_FILE": str(root / "config" / "site.json"),
        "KAMENG_HQ_URL": hq_url, "KAMENG_PUBLIC_URL": url,
    })
    wait_ready(url, f"shop-{site}")
    return url


def main() -> int:
    config.load_kube_config()
    core = client.CoreV1Api()
    co = client.CustomObjectsApi()
    hq_url = start_hq(core)
    print(f"\nHQ          {hq_url}/   back office {hq_url}/admin   login {HQ_ADMIN}")
    for ss in co.list_cluster_custom_object("kameng.io", "v1alpha1", "subsites")["items"]:
        status = ss.get("status") or {}
        if status.get("phase") != "Ready":
            continue
        site = ss["metadata"]["name"]
        url = start_site(core, site, status["namespace"], hq_url)
        print(f"sub-site    {url}/   back office {url}/admin   ({site}, public URL "
              f"{status.get('url')})")
        for m in ss["spec"].get("members", []):
            print(f"  staff     {m['email']:<36} role {m['role']}")
    print(f"password of every demo account: {(STATE / 'demo-password').read_text()}"
          f"  (random per environment; in {STATE / 'demo-password'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
