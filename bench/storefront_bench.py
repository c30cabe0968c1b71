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
from pathlib import Path

import httpx
import psycopg

from tests.support.storefront import (
    hq_add_product,
    hq_import_keys,
    staff_client,
    start_process_stack,
    temp_database,
    wait_for,
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "bench-password-123"


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


PROFILE_DIR: Path | None = None  # --profile: py-spy samples the servers during each run


def _profilers(what: str, servers: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    if PROFILE_DIR is None:
        return []
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")
    return [subprocess.Popen(
        [exe, "record", "--subprocesses", "--idle", "--format", "raw", "-r", "97",
         "-o", str(PROFILE_DIR / f"{name}-{slug}.txt"), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in servers.items()]


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
    profilers = _profilers(what, servers)
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
    for prof in profilers:
        prof.send_signal(signal.SIGINT)
        prof.wait(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()}")
    cpus = os.cpu_count() or 1
    share = {"wrk": ((t_after.children_user - t_before.children_user)
                     + (t_after.children_system - t_before.children_system)) / wall / cpus}
    for k, p in servers.items():
        share[k] = (_proc_cpu_seconds(p) - before[k]) / wall / cpus
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    requests = int(done.group(1)) if done else 0
    # wrk pads its units ("1.06s "): no end-of-line anchor right after the value.
    dist = dict(re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)\s*$", out, re.M))
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
    ap.add_argument("--hq-workers", type=int, default=1, help="HQ worker processes")
    ap.add_argument("--keys", type=int, default=4000, help="card keys to stock")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="sample the servers with py-spy during each run (raw stacks in DIR)")
    args = ap.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    if PROFILE_DIR is not None:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    admin_dsn, redis_url = os.environ.get("KAMENG_PG_ADMIN_DSN"), os.environ.get("KAMENG_REDIS_URL")
    if not admin_dsn or not redis_url:
        print('run `eval "$(hack/devenv up)"` first (KAMENG_PG_ADMIN_DSN, KAMENG_REDIS_URL)')
        return 2
    secs, conns = args.seconds, args.connections
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        st = start_process_stack(stack, admin_dsn, redis_url, Path(tmp), workers=args.workers,
                                 password=PASSWORD, hq_workers=args.hq_workers)
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
    print(f"machine: {cpus} CPUs; HQ {args.hq_workers} worker(s), sub-site {args.workers} "
          "worker(s); "
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
