"""Chaos: PostgreSQL and Redis crash and come back while buyers check out and pay, and the
settlement and risk workers are SIGKILLed mid-flow and restarted.

A shop and HQ (one PostgreSQL and one Redis of this test's own, killed with SIGKILL as a
lost pod would be), buyers ordering and paying all the while. Printed: how long after
each server answered again the first order went all the way through (target: 30 s). At
the end, with the servers and workers back:
- every order HQ was paid for is delivered, exactly one key each, no key twice;
- every paid order's sale is in the ledger once, and `kameng ledger verify` passes;
- every event in the site's stream was decided once by the risk worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml

from kameng.contracts.events import orders_stream
from tests.support.ledger import license_obj, setup_ledger
from tests.support.net import HTTP_TIMEOUT
from tests.support.servers import PrivatePostgres, PrivateRedis
from tests.support.storefront import (
    buy,
    hq_add_product,
    hq_import_keys,
    pay,
    run_stack,
    staff_client,
    wait_for,
)
from tests.support.wait import budget

pytestmark = pytest.mark.chaos

BIN = Path(sys.executable).parent
RECOVERY_S = 30.0
FAST_SWEEP = {"delivery_sweep_seconds": 0.3, "delivery_retry_seconds": 0.2}
# Rules that never act (every event is still decided and stored): the test counts
# decisions, and a review of a busy test buyer would hold deliveries it also counts.
POLICY = {"metadata": {"name": "chaos"}, "spec": {
    "features": [{"name": "n", "key": "customer", "window": "1h"}],
    "rules": [{"name": "never", "expression": "event.amount > 100000000000",
               "action": "review"}]}}


class Traffic:
    """Buyers in a thread: checkout, pay at HQ's sandbox, next; every outcome kept."""

    def __init__(self, stack: Any, product: str) -> None:
        self.stack, self.product = stack, product
        self.done: list[tuple[float, str]] = []  # (finished at, order id), paid
        self.failed: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                with httpx.Client(base_url=self.stack.shop_url, timeout=10) as shop:
                    oid, pay_url = buy(self.stack, shop, self.product, f"b{i}@chaos.example")
                    pay(pay_url)
                self.done.append((time.monotonic(), oid))
            except Exception as exc:  # the servers are down: try again, as buyers do
                self.failed.append((time.monotonic(), type(exc).__name__))
                time.sleep(0.2)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def recovered_after(self, since: float, what: str) -> float:
        """Seconds from ``since`` to the first order paid after it."""
        deadline = time.monotonic() + budget(120)
        while time.monotonic() < deadline:
            later = [t for t, _ in self.done if t > since]
            if later:
                return min(later) - since
            time.sleep(0.1)
        raise AssertionError(f"no order went through after {what}: "
                             f"last failures {self.failed[-5:]}")


def _worker(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(BIN / "kameng"), *argv], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **env})


def _rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql, args).fetchall())


def test_servers_crash_and_workers_die_during_traffic_losing_and_doubling_nothing(
        tmp_path: Path, kubectl: Any, kubeconfig: str) -> None:
    pg = PrivatePostgres().start()
    # The order bus must survive a crash: AOF, fsync on every write (an event the
    # outbox saw Redis take is never lost; docs/architecture.md, "Operations").
    rd = PrivateRedis(tmp_path, persistent=True).start()
    workers: dict[str, Callable[[], subprocess.Popen[bytes]]] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    traffic: Traffic | None = None
    figures: dict[str, float] = {}
    try:
        with run_stack(pg.admin_dsn, rd.url, tmp_path, shop_overrides=FAST_SWEEP,
                       pool_size=10) as st:
            asyncio.run(setup_ledger(st.hq_dsn))
            kubectl("apply", "-f", "-", input=json.dumps(
                {**license_obj(st.site, shares={"game": "8", "mobile": "2.5"}),
                 "metadata": {"name": st.site}}))
            hq = staff_client(st.hq_url, "admin@hq.local")
            hq_add_product(hq, "c1", "game", "10.00", "9.00")
            hq_import_keys(hq, "c1", [f"CHAOS-{i:04d}" for i in range(2000)])
            shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
            wait_for(lambda: 'data-product="c1"' in shop.get("/").text, timeout=30)
            (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
            workers["settlement"] = lambda: _worker(
                ["settlement", "--dsn", st.hq_dsn, "--redis", rd.url, "--kubeconfig",
                 kubeconfig, "--claim-idle-ms", "1000", "--interval", "1",
                 "--metrics-port", "0"], tmp_path / "settlement.log", {})
            workers["risk"] = lambda: _worker(
                ["risk", "run", "--no-kube", "--metrics-port", "0", "--policy-file",
                 str(tmp_path / "policy.yaml"), "--claim-idle-ms", "1000"],
                tmp_path / "risk.log",
                {"KAMENG_REDIS_URL": rd.url, "KAMENG_HQ_DATABASE_URL": st.hq_dsn})
            procs = {name: start() for name, start in workers.items()}
            traffic = Traffic(st, "c1").start()
            wait_for(lambda: len(traffic.done) >= 5, timeout=60)
            # Both workers at work (their groups on the site's stream) before any crash.
            probe = redis.Redis.from_url(rd.url, decode_responses=True)
            wait_for(lambda: {g["name"] for g in probe.xinfo_groups(orders_stream(st.site))}
                     == {"settlement", "risk"}, timeout=60)

            # PostgreSQL crashes (every database of HQ and the shop), down 3 s.
            pg.crash()
            time.sleep(3)
            pg.start()
            figures["postgres"] = traffic.recovered_after(time.monotonic(), "PostgreSQL")

            # Redis crashes (sessions and caches lost; its append-only file keeps the
            # streams and the consumer groups).
            time.sleep(2)
            rd.kill()
            time.sleep(3)
            rd.start()
            figures["redis"] = traffic.recovered_after(time.monotonic(), "Redis")

            # Both workers SIGKILLed mid-flow, twice, and started again.
            for _ in range(2):
                time.sleep(2)
                for name, proc in procs.items():
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    procs[name] = workers[name]()
            time.sleep(3)
            traffic.stop()
            paid_orders = len(traffic.done)

            # Every order HQ was paid for is delivered: one key each, no key twice.
            def paid_at_hq() -> set[str]:
                return {r[0] for r in _rows(st.hq_dsn, "SELECT order_id FROM payments WHERE"
                                            " site = %s AND status = 'paid'", st.site)}

            def delivered() -> set[str]:
                return {r[0] for r in _rows(st.shop_dsn, "SELECT id FROM orders WHERE"
                                            " status = 'delivered'")}
            try:
                wait_for(lambda: paid_at_hq() <= delivered(), timeout=budget(90))
            except AssertionError:
                missing = sorted(paid_at_hq() - delivered())
                shop_side = _rows(st.shop_dsn, "SELECT id, status, created_at FROM orders"
                                  " WHERE id = ANY(%s)", missing)
                hq_side = _rows(st.hq_dsn, "SELECT order_id, status, kind, paid_at,"
                                " notified_at FROM payments WHERE order_id = ANY(%s)", missing)
                raise AssertionError(f"paid, never delivered: shop {shop_side}; "
                                     f"HQ {hq_side}") from None
            keys = _rows(st.hq_dsn, "SELECT order_ref, count(*) FROM card_keys WHERE site = %s"
                         " AND status = 'sold' GROUP BY 1", st.site)
            assert {ref for ref, _ in keys} == paid_at_hq()
            assert all(n == 1 for _, n in keys)
            # Every event the shop emitted (its outbox: the stream itself is trimmed once
            # both groups have it) reaches the ledger and the risk worker, once.
            r = redis.Redis.from_url(rd.url, decode_responses=True)

            def settled() -> bool:
                groups = r.xinfo_groups(orders_stream(st.site))
                return len(groups) == 2 and not any(
                    int(g["pending"]) or int(g.get("lag") or 0) for g in groups)
            wait_for(settled, timeout=budget(90))
            outbox = _rows(st.shop_dsn, "SELECT event_id, published_at IS NOT NULL"
                           " FROM event_outbox")
            assert all(published for _, published in outbox)
            ids = {eid for eid, _ in outbox}
            sales = _rows(st.hq_dsn, "SELECT order_id, count(*) FROM ledger.entries WHERE"
                          " kind = 'sale' AND site = %s GROUP BY 1", st.site)
            assert {oid for oid, _ in sales} == paid_at_hq()
            assert all(n == 1 for _, n in sales)
            decided = _rows(st.hq_dsn, "SELECT event_id FROM risk.decisions WHERE site = %s",
                            st.site)
            assert sorted(d[0] for d in decided) == sorted(ids)
            out = subprocess.run([str(BIN / "kameng"), "ledger", "verify", "--dsn",
                                  st.hq_dsn], capture_output=True, text=True, timeout=120,
                                 check=False)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            print(f"{paid_orders} orders paid during the run ({len(traffic.failed)} "
                  f"attempts refused while a server was down); first order through "
                  f"{figures['postgres']:.1f} s after PostgreSQL answered again, "
                  f"{figures['redis']:.1f} s after Redis; {len(ids)} events, each "
                  f"settled and decided once across 4 worker kills")
            assert figures["postgres"] <= RECOVERY_S
            assert figures["redis"] <= RECOVERY_S
            kubectl("delete", "license", st.site, "--ignore-not-found", "--wait=false")
    finally:
        if traffic is not None:
            traffic.stop()
        for proc in procs.values():
            proc.kill()
            proc.wait()
        pg.remove()
        rd.kill()


def test_operator_rides_out_an_api_server_restart(
        devenv: dict[str, str], kubectl: Any, tmp_path: Path) -> None:
    """The API server SIGKILLed under a running operator (every watch cut, requests
    refused) and back 3 s later: the operator stays up and reconciles an edit made after
    the restart, within 30 s of the API server answering again."""
    from tests.support.operator import OperatorProcess, batch_objects, remove_batch_site

    rp, lic, ss = batch_objects("it-chaosapi", 1)
    name = ss["metadata"]["name"]
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path / "operator.log").start()

    def observed() -> tuple[int, int]:
        obj = json.loads(kubectl("get", "subsite", name, "-o", "json").stdout)
        return (obj["metadata"]["generation"],
                int((obj.get("status") or {}).get("observedGeneration") or 0))
    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([rp, lic, ss]))
        wait_for(lambda: (lambda g: g[0] == g[1])(observed()), timeout=budget(60))
        subprocess.run([str(Path(__file__).resolve().parents[2] / "hack" / "devenv"),
                        "restart-apiserver", "--down", "3"], check=True, timeout=180,
                       capture_output=True)
        back = time.monotonic()
        kubectl("patch", "subsite", name, "--type=merge", "-p",
                json.dumps({"spec": {"branding": {"title": "after the outage"}}}))
        wait_for(lambda: (lambda g: g[0] == g[1] and g[0] > 1)(observed()),
                 timeout=budget(RECOVERY_S))
        took = time.monotonic() - back
        print(f"an edit reconciled {took:.1f} s after the API server answered again")
        assert took <= budget(RECOVERY_S)
        assert op.running(), op.log_tail(40)
        assert op.alive()
    finally:
        remove_batch_site(kubectl, name, rp["metadata"]["name"])
        op.stop()
