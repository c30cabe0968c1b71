"""Start HQ and every Ready sample sub-site's storefront locally, from what the operator
produced in the cluster (ConfigMap `storefront-config`, the site's Secrets, HQ's keys).

Run by `hack/demo` as `python -m hack.demo_storefronts` in the project's virtualenv, after
`hack/devenv up` exported KUBECONFIG, KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL and
KAMENG_DEVENV_DIR. HQ is stocked through its import command (`kameng storefront
hq-import`). Each storefront
is a process managed by `hack/devenv run`, so `hack/devenv down` stops it too. Files
holding secrets are written 0600 under the dev environment's state directory, which
`down` deletes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import yaml
from kubernetes import client, config
from psycopg import sql

from hack.devenv import free_port
from kameng.api.kinds import SHOP_URL_ANNOTATION
from kameng.contracts import pod
from kameng.contracts.hq_auth import REGISTRY_MOUNT, REGISTRY_SECRET, SiteCredential

ROOT = Path(__file__).resolve().parents[1]
KAMENG = str(ROOT / ".venv" / "bin" / "kameng")
KUBECTL_KAMENG = str(ROOT / ".venv" / "bin" / "kubectl-kameng")
STATE = Path(os.environ["KAMENG_DEVENV_DIR"]) / "storefronts"
OPERATOR_NS = os.environ.get("KAMENG_NAMESPACE", "kameng-system")
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
        ports[name] = free_port()
        write_private(ports_file, json.dumps(ports))
    return ports[name]


def start(name: str, mode: str, port: int, env: dict[str, str]) -> str:
    """Starts the storefront; returns the URL of its ops port (probes, metrics)."""
    full = {**os.environ, **env}
    ops_port = port_for(f"{name}-ops")
    subprocess.run([str(ROOT / "hack" / "devenv"), "run", name, "--",
                    KAMENG, "storefront", "--mode", mode,
                    "--host", "127.0.0.1", "--port", str(port), "--ops-port", str(ops_port)],
                   env=full, check=True)
    return f"http://127.0.0.1:{ops_port}"


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


def stock_hq(env: dict[str, str]) -> None:
    """Products and card keys through HQ's import command. The files are made once per
    environment, so a second demo run imports nothing new (duplicates are skipped)."""
    products = STATE / "hq" / "products.json"
    write_private(products, json.dumps([
        {"id": sku, "nameZh": name_zh, "nameEn": name_en, "category": category,
         "region": region, "faceValue": face, "cost": cost}
        for sku, name_zh, name_en, category, face, cost, region in PRODUCTS],
        ensure_ascii=False, indent=1))
    keys = STATE / "hq" / "keys.csv"
    kept_secret(keys, lambda: "product_id,secret\n" + "".join(
        f"{sku},{sku.upper()}-DEMO-{i:04d}-{secrets.token_hex(3).upper()}\n"
        for sku, *_ in PRODUCTS for i in range(KEYS_PER_PRODUCT)))
    out = subprocess.run([KAMENG, "storefront", "hq-import", "--products", str(products),
                          "--keys", str(keys)], env={**os.environ, **env}, text=True,
                         capture_output=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"HQ's import failed:\n{out.stderr[-2000:]}")
    log(out.stdout.strip())


def mount_registry(core: client.CoreV1Api, directory: Path) -> str | None:
    """The site-credential registry Secret as the kubelet mounts it for HQ: one file per
    site, replaced atomically, removed with its key. Returns the resourceVersion seen."""
    try:
        secret = core.read_namespaced_secret(REGISTRY_SECRET, OPERATOR_NS)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        secret = None
    data = (secret.data or {}) if secret is not None else {}
    directory.mkdir(parents=True, exist_ok=True)
    for site, value in data.items():
        tmp = directory / f".{site}.tmp"
        write_private(tmp, base64.b64decode(value).decode())
        tmp.replace(directory / site)
    for path in directory.iterdir():
        if not path.name.startswith(".") and path.name not in data:
            path.unlink()
    return secret.metadata.resource_version if secret is not None else None


def sync_registry(directory: Path, interval: float = 1.0) -> None:
    """Run by `hack/devenv run hq-site-credentials`: keep HQ's registry directory in step
    with the Secret (what the kubelet does in a cluster), so a site the operator suspends,
    deletes or rotates is refused by the local HQ within about a second."""
    config.load_kube_config()
    core = client.CoreV1Api()
    seen: str | None = "-"
    while True:
        try:
            version = core.read_namespaced_secret(REGISTRY_SECRET, OPERATOR_NS) \
                .metadata.resource_version
        except client.ApiException as exc:
            version = None if exc.status == 404 else seen
        if version != seen:
            seen = mount_registry(core, directory)
        time.sleep(interval)


def start_hq(core: client.CoreV1Api) -> str:
    root = STATE / "hq" / "secrets"
    registry = Path(pod.mount_path(REGISTRY_MOUNT, str(root)))
    mount_registry(core, registry)
    subprocess.run([str(ROOT / "hack" / "devenv"), "run", "hq-site-credentials", "--",
                    sys.executable, "-m", "hack.demo_storefronts", "sync-registry",
                    str(registry)], env=dict(os.environ), check=True, cwd=ROOT)
    keys = secret_data(core, OPERATOR_NS, pod.HQ_KEYS_SECRET)
    for entry in (pod.HQ_MASTER_SECRET, pod.HQ_PUBLIC_KEY):
        write_private(Path(entry.path(str(root))), keys[entry.key])
    write_private(Path(pod.DB_DSN.path(str(root))),
                  ensure_database(os.environ["KAMENG_PG_ADMIN_DSN"], "kameng_hq_demo"))
    write_private(Path(pod.REDIS_URL.path(str(root))), os.environ["KAMENG_REDIS_URL"])
    kept_secret(Path(pod.SESSION_SECRET.path(str(root))), lambda: secrets.token_urlsafe(32))
    kept_secret(Path(pod.DATA_KEYS.path(str(root))),
                lambda: "k1:" + base64.b64encode(secrets.token_bytes(32)).decode())
    # HQ's one account has a bootstrap password; it must choose its own at first login.
    password = kept_secret(STATE / "hq-bootstrap-password", lambda: secrets.token_urlsafe(12))
    write_private(Path(pod.ADMIN_PASSWORD.path(str(root))), password)
    port = port_for("hq")
    url = f"http://127.0.0.1:{port}"
    # The demo takes payments through the sandbox: enabled explicitly, never by default.
    env = {pod.SECRETS_ROOT_ENV: str(root), pod.PUBLIC_URL_ENV: url,
           "KAMENG_SANDBOX_PAYMENTS": "enabled"}
    stock_hq(env)
    wait_ready(start("hq", "hq", port, env), "hq")
    return url


def start_workers() -> str:
    """The two workers on HQ's database (created by HQ's start): settlement (paid orders →
    ledger, payouts, statements) and risk with the default RiskPolicy
    (manifests/samples/riskpolicy-default.yaml), which stores its decisions there."""
    dsn = ensure_database(os.environ["KAMENG_PG_ADMIN_DSN"], "kameng_hq_demo")
    env = {**os.environ, "KAMENG_HQ_DATABASE_URL": dsn}
    for name, cmd in (("settlement", ["settlement"]), ("risk", ["risk", "run"])):
        subprocess.run([str(ROOT / "hack" / "devenv"), "run", name, "--",
                        KAMENG, *cmd, "--metrics-port", "0"], env=env, check=True)
    return dsn


def start_site(core: client.CoreV1Api, site: str, namespace: str, hq_url: str) -> str:
    root = STATE / site
    cm = core.read_namespaced_config_map(pod.CONFIGMAP_NAME, namespace)
    config_file = root / "config" / pod.CONFIGMAP_KEY
    write_private(config_file, cm.data[pod.CONFIGMAP_KEY])
    secrets_root = str(root / "secrets")
    for name in pod.SITE_SECRETS:
        for key, value in secret_data(core, namespace, name).items():
            write_private(Path(pod.mount_path(name, secrets_root)) / key, value)
    port = port_for(f"shop-{site}")
    url = f"http://127.0.0.1:{port}"
    ops = start(f"shop-{site}", "subsite", port, {
        pod.SECRETS_ROOT_ENV: secrets_root, pod.SITE_CONFIG_FILE_ENV: str(config_file),
        "KAMENG_HQ_URL": hq_url, pod.PUBLIC_URL_ENV: url,
    })
    wait_ready(ops, f"shop-{site}")
    register_shop_url(site, url)
    return url


def register_shop_url(site: str, url: str) -> None:
    """The local shop is not served at its domain: tell the operator its URL (annotation
    kameng.io/shop-url), so HQ accepts its payment URLs, and wait until HQ's registry copy
    lists it."""
    client.CustomObjectsApi().patch_cluster_custom_object(
        "kameng.io", "v1alpha1", "subsites", site,
        {"metadata": {"annotations": {SHOP_URL_ANNOTATION: url}}})
    entry = Path(pod.mount_path(REGISTRY_MOUNT, str(STATE / "hq" / "secrets"))) / site
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if entry.exists() and url in SiteCredential.from_json(entry.read_bytes()).urls:
            return
        time.sleep(0.2)
    raise SystemExit(f"HQ's site-credential registry did not list {url} for {site}")


def invitations(site: str, url: str) -> list[dict[str, str]]:
    """One-time set-password links for every member, exactly as HQ's operator gets them
    (`kubectl kameng invite`), pointed at the local URL of the shop."""
    out = subprocess.run([KUBECTL_KAMENG, "invite", site, "--all", "--url", url, "-o", "json"],
                         text=True, capture_output=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kameng invite {site} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)["invitations"]


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SAMPLE_SKU = "steam-100"


def _csrf(page: httpx.Response) -> str:
    m = _CSRF.search(page.text)
    if m is None:
        raise SystemExit(f"{page.url}: no CSRF field (HTTP {page.status_code})")
    return m.group(1)


def sample_purchase(shop_url: str) -> str:
    """Buy one card as a customer would: checkout in the shop, pay on HQ's sandbox pay
    page. Returns the order page's path."""
    with httpx.Client(base_url=shop_url, timeout=15) as shop, httpx.Client(timeout=15) as payer:
        r = shop.post("/checkout", data={"csrf": _csrf(shop.get(f"/p/{SAMPLE_SKU}")),
                                         "product": SAMPLE_SKU,
                                         "contact": "sample.buyer@example.com"})
        if r.status_code != 303:
            raise SystemExit(f"sample purchase: checkout answered {r.status_code}")
        pay_url = r.headers["location"]
        r = payer.post(pay_url, data={"csrf": _csrf(payer.get(pay_url))})
        if r.status_code != 303:
            raise SystemExit(f"sample purchase: payment answered {r.status_code}")
        return httpx.URL(r.headers["location"]).path


def print_statement(site: str, hq_dsn: str, timeout: float = 90) -> None:
    """The site's current statement, exactly as `kubectl kameng statement` prints it, once
    the settlement worker has posted the sample purchase (gross above zero)."""
    env = {**os.environ, "KAMENG_HQ_DATABASE_URL": hq_dsn}
    cmd = [KUBECTL_KAMENG, "statement", site]
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([*cmd, "-o", "json"], env=env, text=True, capture_output=True,
                             check=False)
        if out.returncode == 0 and json.loads(out.stdout).get("gross", 0) > 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the sample purchase did not reach {site}'s statement within "
                             f"{timeout:.0f}s:\n{out.stderr[-2000:]}")
        time.sleep(0.5)
    csv = subprocess.run(cmd, env=env, text=True, capture_output=True, check=True).stdout
    print(f"\nSample purchase settled: {site}'s statement (kubectl kameng statement {site};"
          " amounts in yuan, the open period is a draft)")
    print(csv.rstrip())


def sample_sites() -> set[str]:
    docs = (d for f in sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text(encoding="utf-8")))
    return {d["metadata"]["name"] for d in docs if d and d.get("kind") == "SubSite"}


def main() -> int:
    config.load_kube_config()
    core = client.CoreV1Api()
    co = client.CustomObjectsApi()
    hq_url = start_hq(core)
    hq_dsn = start_workers()
    bootstrap = (STATE / "hq-bootstrap-password").read_text()
    shops: dict[str, str] = {}
    print(f"\nHQ          {hq_url}/   back office {hq_url}/admin   login {HQ_ADMIN}"
          f"   first password {bootstrap} (you choose your own at first login)")
    for ss in co.list_cluster_custom_object("kameng.io", "v1alpha1", "subsites")["items"]:
        status = ss.get("status") or {}
        site = ss["metadata"]["name"]
        # Only the samples': the cluster may hold other SubSites (a person's, the tests').
        if status.get("phase") != "Ready" or site not in sample_sites():
            continue
        url = start_site(core, site, status["namespace"], hq_url)
        shops[site] = url
        print(f"sub-site    {url}/   back office {url}/admin   ({site}, public URL "
              f"{status.get('url')})")
        roles = {m["email"]: m["role"] for m in ss["spec"].get("members", [])}
        for inv in invitations(site, url):
            print(f"  staff     {inv['email']:<36} role {roles[inv['email']]:<12} "
                  f"invitation {inv['url']}")
    print("Each member sets their own password through their one-time invitation link "
          "(valid 72h; a new one: kubectl kameng invite <site> <member>).")
    if "demo" in shops:
        log(f"sample purchase of {SAMPLE_SKU} in the demo shop")
        order = sample_purchase(shops["demo"])
        print(f"\nSample purchase: {shops['demo']}{order}")
        print_statement("demo", hq_dsn)
    print(f"\nSettlement: statements in {hq_url}/admin/statements, or "
          "KAMENG_HQ_DATABASE_URL=... kubectl kameng statement <site> "
          f"(HQ's DSN is in {STATE / 'hq' / 'secrets'})")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["sync-registry"]:
        sync_registry(Path(sys.argv[2]))
    sys.exit(main())
