"""Storefront benchmark: the issue's storefront rows, each as a ratio to a denominator
measured in the same run.

    eval "$(hack/devenv up)" && .venv/bin/python -m bench.storefront_bench [--seconds 10]
        [--workers N] [--connections 16]

- catalogue page (``/``) req/s ÷ ``/healthz`` req/s of the same sub-site process (target
  ≥ 0.8);
- checkout + pay + deliver orders/s ÷ PostgreSQL's own ``pgbench`` TPS (target ≥ 0.04),
  and the p99 of ``POST /checkout`` at half that order rate (target ≤ 250 ms).

HQ and the sub-site run as separate ``kameng storefront`` processes (as in production).
The load comes from ``wrk`` (C, epoll; Lua scripts in ``bench/lua/`` drive the order path),
never from Python, and each figure is printed with wrk's and the servers' share of the
machine's CPU, so a saturated generator shows. Not a timed test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
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


@dataclass
class BenchStack:
    hq_url: str
    shop_url: str
    shop_ops_url: str
    shop_dsn: str
    pids: dict[str, int]  # "shop" / "hq" → process id


def start_stack(
    stack: ExitStack, admin_dsn: str, redis_url: str, tmp: Path, workers: int
) -> BenchStack:
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
                *(["--workers", str(workers)] if mode == "subsite" and workers > 1 else []),
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
    return BenchStack(hq_url, shop_url, f"http://127.0.0.1:{ops_ports['subsite']}", shop_dsn,
                      pids)


LUA = Path(__file__).parent / "lua"


def _proc_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children that it reaped, plus its
    live children's (the workers of ``--workers N``)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def one(p: int) -> float:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime, stime, cutime, cstime are fields 14..17 (1-based) of /proc/PID/stat.
        return sum(int(x) for x in f[11:15]) / ticks

    total = one(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += one(int(child))
    return total


@dataclass
class WrkRun:
    """One ``wrk`` run: its parsed figures and who used the CPU meanwhile."""

    what: str
    requests_per_s: float
    requests: int
    seconds: float
    latency_ms: dict[str, float]
    non_2xx_3xx: int
    errors: str
    cpu_share: dict[str, float]  # process name → share of the machine's CPU (0..1)

    def line(self) -> str:
        cpu = ", ".join(f"{k} {v:.0%}" for k, v in self.cpu_share.items())
        lat = " ".join(f"p{k} {v:.1f}ms" for k, v in self.latency_ms.items())
        bad = f", {self.non_2xx_3xx} non-2xx/3xx" if self.non_2xx_3xx else ""
        err = f", socket errors: {self.errors}" if self.errors else ""
        return (f"{self.what:<34} {self.requests_per_s:9.1f} req/s  [{lat}]{bad}{err}"
                f"  CPU: {cpu}")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(what: str, url: str, *, seconds: float, threads: int, connections: int,
        servers: dict[str, int], script: Path | None = None, args: list[str] | None = None,
        until: Callable[[], bool] | None = None) -> WrkRun:
    """Run ``wrk`` (with ``--latency``), measuring its and the servers' CPU meanwhile.
    ``until``: stop wrk early (SIGINT, it still prints its figures) once this holds."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is missing: hack/system-deps installs it (Debian package wrk)")
    cmd = [exe, "--latency", "-t", str(threads), "-c", str(connections),
           "-d", f"{max(1, round(seconds))}s", "--timeout", "30s"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if args:
        cmd += ["--", *args]
    before = {k: _proc_cpu_seconds(p) for k, p in servers.items()}
    t_before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if until is not None:
        while proc.poll() is None and not until():
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    t_after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()}")
    cpus = os.cpu_count() or 1
    share = {"wrk": ((t_after.children_user - t_before.children_user)
                     + (t_after.children_system - t_before.children_system)) / wall / cpus}
    for k, p in servers.items():
        share[k] = (_proc_cpu_seconds(p) - before[k]) / wall / cpus
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    requests = int(done.group(1)) if done else 0
    dist = dict(re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)$", out, re.M))
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return WrkRun(
        what=what,
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        requests=requests, seconds=wall,
        latency_ms={k: _ms(v) for k, v in dist.items()},
        non_2xx_3xx=int(non.group(1)) if non else 0,
        errors=errors.group(1).strip() if errors else "",
        cpu_share=share,
    )


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


@dataclass
class OrderRun:
    orders: int
    orders_per_s: float
    checkout: WrkRun
    pay: WrkRun
    delivered_after_s: float


def order_path(shop_url: str, hq_url: str, shop_dsn: str, servers: dict[str, int],
               seconds: float, connections: int, tmp: Path) -> OrderRun:
    """Checkout + pay + deliver at the highest rate wrk reaches, in two phases: wrk checks
    out for ``seconds`` (each connection a customer), then a second wrk pays every order on
    HQ's pay page; an order counts once the shop has delivered its key. The rate is all
    orders ÷ (checkout time + time from the first payment to the last delivery): the phases
    do not overlap, so this is a lower bound of a pipeline's rate."""
    urls = tmp / "pay-urls.txt"
    before = _count(shop_dsn, "SELECT count(*) FROM orders WHERE status = 'delivered'")
    checkout = wrk("checkout (POST /checkout)", shop_url, seconds=seconds,
                   threads=connections, connections=connections, servers=servers,
                   script=LUA / "checkout.lua", args=[str(urls)])
    n = len(urls.read_text().split())
    t0 = time.perf_counter()
    delivered_at: list[float] = []

    def all_delivered() -> bool:
        got = _count(shop_dsn, "SELECT count(*) FROM orders WHERE status = 'delivered'")
        if got - before >= n and not delivered_at:
            delivered_at.append(time.perf_counter() - t0)
        return bool(delivered_at)

    pay = wrk("pay (GET+POST pay page on HQ)", hq_url, seconds=300, threads=connections,
              connections=connections, servers=servers, script=LUA / "pay.lua",
              args=[str(urls), str(connections)], until=all_delivered)
    if not delivered_at:
        wait_for(all_delivered, timeout=300, interval=0.05)
    total = checkout.seconds + delivered_at[0]
    return OrderRun(orders=n, orders_per_s=n / total, checkout=checkout, pay=pay,
                    delivered_after_s=delivered_at[0])


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
    ap.add_argument("--seconds", type=float, default=10, help="length of each wrk run")
    ap.add_argument("--connections", type=int, default=16,
                    help="wrk connections (= customers of the order path)")
    ap.add_argument("--workers", type=int, default=1, help="sub-site worker processes")
    ap.add_argument("--keys", type=int, default=4000, help="card keys to stock")
    args = ap.parse_args()
    admin_dsn, redis_url = os.environ.get("KAMENG_PG_ADMIN_DSN"), os.environ.get("KAMENG_REDIS_URL")
    if not admin_dsn or not redis_url:
        print('run `eval "$(hack/devenv up)"` first (KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL)')
        return 2
    secs, conns = args.seconds, args.connections
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        st = start_stack(stack, admin_dsn, redis_url, Path(tmp), args.workers)
        hq = staff_client(st.hq_url, "admin@hq.local", PASSWORD,
                          replace_bootstrap_with=f"{PASSWORD}-own-choice")
        hq_add_product(hq, "bench-10", "game", "10.00", "9.00")
        for start in range(0, args.keys, 2000):
            hq_import_keys(hq, "bench-10", [f"BENCH-{i:06d}"
                                            for i in range(start, min(start + 2000, args.keys))])
        wait_for(lambda: "bench-10" in httpx.get(f"{st.shop_url}/").text, timeout=30)
        servers = {"shop": st.pids["shop"], "hq": st.pids["hq"]}
        get = dict(seconds=secs, threads=2, connections=64, servers=servers)
        healthz = wrk("/healthz (sub-site, same process)", f"{st.shop_ops_url}/healthz", **get)
        page = wrk("catalogue page GET /", f"{st.shop_url}/", **get)
        orders = order_path(st.shop_url, st.hq_url, st.shop_dsn, servers, secs, conns,
                            Path(tmp))
        # Half the order rate, paced by wrk's delay(): each connection waits so that all
        # together check out at ~half the measured orders/s.
        pause_ms = round(conns * 1000 / (orders.orders_per_s / 2))
        half = wrk("checkout at half the order rate", st.shop_url, seconds=secs,
                   threads=conns, connections=conns, servers=servers,
                   script=LUA / "checkout.lua", args=["", str(pause_ms)])
    tps = pgbench_tps(admin_dsn, int(secs))
    cpus = os.cpu_count()
    page_ratio = page.requests_per_s / healthz.requests_per_s
    order_ratio = orders.orders_per_s / tps
    p99 = half.latency_ms.get("99", float("nan"))
    print(f"machine: {cpus} CPUs; HQ one process, sub-site {args.workers} worker(s); "
          f"wrk -t/-c as below, {secs:.0f}s per run")
    for run in (healthz, page, orders.checkout, orders.pay, half):
        print("  " + run.line())
    print(f"  pgbench (TPC-B, -c 8 -j 2, scale 10): {tps:.1f} TPS")
    print()
    print("| row | measured | ratio (same run) | target |")
    print("|---|---|---|---|")
    print(f"| catalogue page | {page.requests_per_s:.0f} req/s vs /healthz "
          f"{healthz.requests_per_s:.0f} req/s | {page_ratio:.2f} | ≥ 0.8 |")
    print(f"| checkout + pay + deliver | {orders.orders_per_s:.1f} orders/s ({orders.orders} "
          f"orders; checkout {orders.checkout.seconds:.1f}s, pay→all delivered "
          f"{orders.delivered_after_s:.1f}s) vs pgbench {tps:.0f} TPS | {order_ratio:.4f} "
          f"| ≥ 0.04 |")
    print(f"| p99 checkout at half the order rate | {p99:.0f} ms at "
          f"{half.requests_per_s:.1f} checkouts/s | - | ≤ 250 ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
