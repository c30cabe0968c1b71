"""Storefront benchmark: checkout + pay + deliver orders/s and catalogue page requests/s,
with PostgreSQL's own ``pgbench`` TPS measured in the same run as the denominator.

    eval "$(hack/devenv up)" && python -m bench.storefront_bench [--orders 300] [--seconds 10]

HQ and the sub-site run as separate ``kameng storefront`` processes (as in production),
the load generator in this process. Prints the figures; not a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

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
from tests.support.storefront import (
    hq_add_product,
    hq_import_keys,
    site_config,
    staff_client,
    temp_database,
    wait_for,
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "bench-password-123"


def _write(root: Path, rel: str, value: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(value, encoding="utf-8")


def start_stack(
    stack: ExitStack, admin_dsn: str, redis_url: str, tmp: Path
) -> tuple[str, str, str]:
    key, master, site = generate_signing_key(), os.urandom(16).hex(), "bench"
    hq_port, shop_port = free_port(), free_port()
    hq_url, shop_url = f"http://127.0.0.1:{hq_port}", f"http://127.0.0.1:{shop_port}"
    hq_dsn = stack.enter_context(temp_database(admin_dsn, "kameng_benchhq"))
    shop_dsn = stack.enter_context(temp_database(admin_dsn, "kameng_benchsite"))
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
        _write(root, "storefront-db/dsn", dsn)
        _write(root, "storefront-redis/url", redis_url)
        _write(root, "storefront-keys/session-secret", os.urandom(24).hex())
        _write(root, "storefront-keys/data-key", DataCipher.generate_spec())
        if kind == "hq":  # only HQ's admin has a bootstrap password
            _write(root, "storefront-keys/admin-password", PASSWORD)
            _write(root, "hq/master-secret", master)
            _write(root, "hq/public-key", public_key_to_b64(key))
    _write(shop, "config/site.json", site_config(site, hq_url, public_key_to_b64(key)).to_json())
    api_token = new_site_api_token()
    _write(shop, "storefront-keys/hq-api-token", api_token)
    # HQ checks it against its mounted site-credential registry.
    _write(hq, f"{REGISTRY_MOUNT}/{site}", SiteCredential(
        site=site, sha256=token_digest(api_token), createdAt=now.isoformat(),
        urls=[shop_url]).to_json())
    _write(shop, "license/token", token)
    ops_ports = {"hq": free_port(), "subsite": free_port()}
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
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(lambda p=proc: (p.terminate(), p.wait(timeout=20)))

    def ready(u: str) -> bool:
        try:
            return httpx.get(f"{u}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(lambda: all(ready(f"http://127.0.0.1:{p}") for p in ops_ports.values()),
             timeout=60, interval=0.3)
    return hq_url, shop_url, shop_dsn


# One transport (connection pool, TLS context) shared by all simulated customers; each
# customer still gets its own client, so its own cookies (session, CSRF token).
_TRANSPORT: httpx.AsyncHTTPTransport | None = None


def _client(**kw: object) -> httpx.AsyncClient:
    global _TRANSPORT
    if _TRANSPORT is None:
        _TRANSPORT = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200))
    return httpx.AsyncClient(transport=_TRANSPORT, timeout=120, **kw)  # type: ignore[arg-type]


async def buy(shop_url: str, i: int) -> None:
    shop = _client(base_url=shop_url)
    page = await shop.get("/p/bench-10")
    r = await shop.post(
        "/checkout",
        data={
            "csrf": CSRF.search(page.text).group(1),
            "product": "bench-10",
            "contact": f"bench{i}@example.com",
        },
    )
    assert r.status_code == 303, r.status_code
    pay_url = r.headers["location"]
    payer = _client()
    page = await payer.get(pay_url)
    r = await payer.post(pay_url, data={"csrf": CSRF.search(page.text).group(1)})
    assert r.status_code == 303


async def orders_per_second(shop_url: str, shop_dsn: str, n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await buy(shop_url, i)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))

    def delivered() -> bool:
        with psycopg.connect(shop_dsn) as conn:
            return (
                conn.execute("SELECT count(*) FROM orders WHERE status = 'delivered'").fetchone()[0]
                >= n
            )

    await asyncio.to_thread(wait_for, delivered, 300, 0.05)
    return n / (time.perf_counter() - t0)


async def pages_per_second(url: str, seconds: float, concurrency: int) -> float:
    count = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                r = await c.get(url)
                assert r.status_code == 200
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - t0)


def pgbench_tps(admin_dsn: str, seconds: int) -> float:
    exe = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    with temp_database(admin_dsn, "kameng_pgbench") as dsn:
        subprocess.run([exe, "-i", "-q", "-s", "10", dsn], check=True, capture_output=True)
        out = subprocess.run(
            [exe, "-c", "8", "-j", "2", "-T", str(seconds), dsn],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    admin_dsn, redis_url = os.environ.get("KAMENG_PG_ADMIN_DSN"), os.environ.get("KAMENG_REDIS_URL")
    if not admin_dsn or not redis_url:
        print('run `eval "$(hack/devenv up)"` first (KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL)')
        return 2
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        hq_url, shop_url, shop_dsn = start_stack(stack, admin_dsn, redis_url, Path(tmp))
        hq = staff_client(hq_url, "admin@hq.local", PASSWORD,
                          replace_bootstrap_with=f"{PASSWORD}-own-choice")
        hq_add_product(hq, "bench-10", "game", "10.00", "9.00")
        hq_import_keys(hq, "bench-10", [f"BENCH-{i:06d}" for i in range(args.orders + 10)])
        wait_for(lambda: "bench-10" in httpx.get(f"{shop_url}/").text, timeout=30)
        orders = asyncio.run(orders_per_second(shop_url, shop_dsn, args.orders, args.concurrency))
        pages = asyncio.run(pages_per_second(f"{shop_url}/", args.seconds, args.concurrency))
    tps = pgbench_tps(admin_dsn, int(args.seconds))
    cpus = os.cpu_count()
    print(f"machine: {cpus} CPUs; HQ and sub-site: one uvicorn process each")
    print(
        f"checkout+pay+deliver: {orders:8.1f} orders/s  ({args.orders} orders, "
        f"concurrency {args.concurrency})"
    )
    print(
        f"catalogue page (/):   {pages:8.1f} req/s     ({args.seconds:.0f}s, "
        f"concurrency {args.concurrency})"
    )
    print(f"pgbench (TPC-B, -c 8 -j 2, scale 10): {tps:8.1f} TPS")
    print(f"ratio orders/s ÷ pgbench TPS: {orders / tps:.4f}; page req/s ÷ TPS: {pages / tps:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
