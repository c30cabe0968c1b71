"""Run `kameng operator` as a real subprocess — for integration tests and the benchmark.

Operators run ``--standalone`` unless given a peering name: each test controls exactly
which operators exist, and a standalone one refuses to start next to another.

A standalone operator holds the Lease ``kameng-system/kameng-operator`` while it runs
(``kameng.controller.exclusive``), so one operator a test forgets to stop makes every
later test's operator refuse to start: one failure becomes a cascade. Hence:

- every started operator is recorded here, and ``tests/support/operator_guard.py`` (a
  pytest plugin, loaded by ``tests/conftest.py``) stops whatever a test or a module left
  running, even when the fixture that started it never reached its ``stop()`` (a later
  step of the fixture raised, or its cleanup did);
- :meth:`OperatorProcess.stop` is SIGTERM (the operator releases its Lease), then
  SIGKILL after a deadline;
- :meth:`OperatorProcess.start` first waits out a Lease still held by an operator of
  this machine that has exited (killed, so it could not release), and refuses at once,
  naming it, when a live operator this session did not start holds it: a test never
  takes the Lease from an operator it does not own.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from hack.devenv import alive
from kameng.api.common import API_VERSION
from kameng.controller.config import OperatorConfig
from kameng.controller.exclusive import LEASE_NAME as LEASE
from tests.support.net import free_port

# SIGTERM to SIGKILL: a clean kopf shutdown takes a few seconds, ~15 s at load average 10.
STOP_SECONDS = 30.0
# The Lease lasts 15 s after its last renewal; a dead holder's is gone well within this.
LEASE_WAIT_SECONDS = 60.0

_SEQ = itertools.count(1)
_last_seq = 0
# Every operator this session started, by pid: whose Lease is "ours" to wait out.
_STARTED: dict[int, OperatorProcess] = {}

LeaseVerdict = Literal["free", "wait", "ours", "foreign", "elsewhere"]


# One home for "is this pid a live process" (zombies count as exited): the dev environment's.
pid_alive = alive


def lease_verdict(spec: Mapping[str, Any], now: datetime, host: str,
                  ours: Callable[[int], bool], alive: Callable[[int], bool]
                  ) -> LeaseVerdict:
    """What a test about to start a standalone operator makes of the Lease's spec.

    ``free``: none held, released, or expired. ``wait``: still fresh but its holder, an
    operator of this machine, has exited (killed, so it could not release): it expires
    by itself within its duration. ``ours``: a live operator this session started (the
    test may mean to see the refusal). ``foreign``: a live operator of this machine the
    session did not start: never to be stolen. ``elsewhere``: held from another machine;
    the operator itself judges whether it still renews.
    """
    holder = str(spec.get("holderIdentity") or "")
    renewed = _parse_time(spec.get("renewTime"))
    seconds = int(spec.get("leaseDurationSeconds") or 0)
    if not holder or renewed is None or renewed + timedelta(seconds=seconds) < now:
        return "free"
    where, _, pid_text = holder.rpartition("/")
    if where != host or not pid_text.isdigit():
        return "elsewhere"
    pid = int(pid_text)
    if not alive(pid):
        return "wait"
    return "ours" if ours(pid) else "foreign"


def _parse_time(text: Any) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
    return t.replace(tzinfo=t.tzinfo or UTC) if t else None


def started_mark() -> int:
    """A mark: :func:`stop_started_since` stops the operators made after it."""
    return _last_seq


def stop_started_since(mark: int, *, test_end: bool = False) -> list[OperatorProcess]:
    """Stop every operator made after ``mark`` that still runs; return them. At a test's
    end (``test_end``), one handed to its module (:meth:`OperatorProcess.for_module`) is
    left to the module's end."""
    left = list({id(op): op for op in _STARTED.values()
                 if op.seq > mark and op.running()
                 and not (test_end and op.module_owned)}.values())
    for op in left:
        op.stop()
    return left


class OperatorProcess:
    def __init__(self, kubeconfig: str, pg_admin_dsn: str, redis_url: str,
                 log_path: Path, extra_args: tuple[str, ...] = (),
                 extra_env: dict[str, str] | None = None,
                 peering: str | None = None) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        mode = ["--standalone"] if peering is None else ["--peering", peering]
        self.args = [sys.executable, "-m", "kameng.cli.main", "operator", *mode,
                     "--metrics-port", str(self.metrics_port),
                     "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                     *extra_args]
        # Exit archives of deleted test sites go beside the log (no S3 store Secret).
        self.env = {**os.environ, "KUBECONFIG": kubeconfig,
                    "KAMENG_PG_ADMIN_DSN": pg_admin_dsn, "KAMENG_REDIS_URL": redis_url,
                    "KAMENG_EXPORT_DIR": str(log_path.parent / "exports"),
                    **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        # Numbered when made, not when (re)started: an operator a module fixture made and a
        # test restarts (stop(), then start()) still belongs to the module, so the guard
        # stops it at the module's end, not the test's.
        global _last_seq
        self.seq = _last_seq = next(_SEQ)
        self.module_owned = False
        self.namespace = self.env.get("KAMENG_NAMESPACE") or OperatorConfig.namespace
        for i, arg in enumerate(extra_args):
            if arg == "--namespace" and i + 1 < len(extra_args):
                self.namespace = extra_args[i + 1]
            elif arg.startswith("--namespace="):
                self.namespace = arg.partition("=")[2]
        self.standalone = peering is None

    def __enter__(self) -> OperatorProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def for_module(self) -> OperatorProcess:
        """Hand an operator a test made to its module (a test that replaces a module
        fixture's operator for the tests after it): the guard stops it at the module's end,
        not the test's."""
        self.module_owned = True
        return self

    def start(self, wait: float = 120.0) -> OperatorProcess:
        if self.standalone:
            self.wait_for_lease(LEASE_WAIT_SECONDS)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()  # the child has its own descriptor
        _STARTED[self.proc.pid] = self
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            if self.alive():
                return self
            time.sleep(0.1)
        self.kill()  # a late start must not hold the Lease against the next operator
        raise RuntimeError(f"operator not live after {wait}s; see {self.log_path}")

    def _lease(self) -> dict[str, Any] | None:
        """The Lease's spec as the API server has it ({} when there is none); None when
        it cannot be read here (no kubectl: the operator's own check still applies)."""
        bin_dir = self.env.get("KAMENG_BIN_DIR")
        kubectl = str(Path(bin_dir) / "kubectl") if bin_dir else shutil.which("kubectl")
        if not kubectl or not Path(kubectl).exists():
            return None
        proc = subprocess.run([kubectl, "--kubeconfig", self.env["KUBECONFIG"], "get",
                               "lease", LEASE, "-n", self.namespace, "-o", "json",
                               "--ignore-not-found"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot read Lease {self.namespace}/{LEASE}: "
                               f"{proc.stderr.strip()[-500:]}")
        return dict((json.loads(proc.stdout) if proc.stdout.strip() else {})
                    .get("spec") or {})

    def wait_for_lease(self, timeout: float) -> None:
        """Before a standalone start: poll until the Lease is not held by an exited
        operator of this machine (see :func:`lease_verdict`); refuse to start next to a
        live operator this session did not start, naming it."""
        host = self.env.get("POD_NAME") or socket.gethostname()
        deadline = time.monotonic() + timeout
        while True:
            spec = self._lease()
            if spec is None:
                return
            verdict = lease_verdict(spec, datetime.now(UTC), host,
                                    ours=lambda pid: pid in _STARTED, alive=pid_alive)
            if verdict == "foreign":
                raise RuntimeError(
                    f"Lease {self.namespace}/{LEASE} is held by a live operator this test "
                    f"session did not start ({spec.get('holderIdentity')}); a test does not "
                    "take it over: stop that process (a leftover of an earlier run?)")
            if verdict != "wait":
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Lease {self.namespace}/{LEASE} of the exited operator "
                    f"{spec.get('holderIdentity')} still held after {timeout:g}s: {spec}")
            time.sleep(0.5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def api_writes(self) -> float:
        return sum(float(v) for v in re.findall(
            r'^kameng_api_writes_total\{[^}]*\} ([0-9.e+]+)$', self.metrics(), re.M))

    def writes_by_kind(self) -> dict[str, float]:
        """The operator's own write counter, summed per kind of object written."""
        out: dict[str, float] = {}
        for labels, value in re.findall(r'^kameng_api_writes_total\{([^}]*)\} ([0-9.e+]+)$',
                                        self.metrics(), re.M):
            kind = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("kind", "unknown")
            out[kind] = out.get(kind, 0.0) + float(value)
        return out

    def log_tail(self, lines: int) -> str:
        """The last ``lines`` lines of its log (for a failing test's message)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def pause(self) -> None:
        """SIGSTOP: the operator's state frozen while a test looks at it (its metrics
        endpoint does not answer until :meth:`resume`)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crashed pod."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()  # SIGKILL cannot be ignored: this returns, and reaps it

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM (a clean stop releases the Lease), SIGKILL after ``timeout`` s."""
        if self.proc and self.proc.poll() is None:
            self.resume()  # a paused process would not handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def _status_kib(self, field: str) -> int:
        if not self.proc:
            return 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def rss_bytes(self) -> int:
        """Peak resident set size (VmHWM) of the operator process."""
        return self._status_kib("VmHWM") * 1024

    def current_rss_bytes(self) -> int:
        """Resident set size now (VmRSS)."""
        return self._status_kib("VmRSS") * 1024


def drop_retained_data(admin_dsn: str, kubectl: Callable[..., Any], site: str,
                       namespace: str = OperatorConfig.namespace) -> None:
    """Drop what a deleted SubSite with reclaimPolicy Retain keeps (its database, role and
    the copy of its keys), as a person would (docs/runbooks.md, "Retained data"): a test
    that made one removes it, so runs on a reused environment do not pile them up, and a
    later site of the same name is not refused it (RetainedDataExists)."""
    import psycopg
    from psycopg import sql

    from kameng.contracts.pod import site_keys_copy
    from kameng.provision.names import pg_identifier

    ident = sql.Identifier(pg_identifier(site))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    kubectl("delete", "secret", site_keys_copy(site), "-n", namespace, "--ignore-not-found",
            check=False)


def batch_objects(prefix: str, n: int) -> list[dict[str, Any]]:
    """One RolePolicy, then a License and a SubSite per site (names `prefix-0000`...):
    the batch the benchmark and the scale test create."""
    docs: list[dict[str, Any]] = [{
        "apiVersion": API_VERSION, "kind": "RolePolicy",
        "metadata": {"name": f"{prefix}-rp"},
        "spec": {"roles": [{"name": "site-admin", "permissions": ["catalog:read"],
                            "kubernetes": {"access": "view"}}]}}]
    for i in range(n):
        name = f"{prefix}-{i:04d}"
        docs.append({"apiVersion": API_VERSION, "kind": "License",
                     "metadata": {"name": name},
                     "spec": {"subSite": name, "plan": "basic", "categories": ["game-cards"],
                              "term": {"start": "2026-01-01T00:00:00Z",
                                       "end": "2036-01-01T00:00:00Z"},
                              # Explicit: the CRD's revenueShare rule needs the key.
                              "fees": {"revenueShare": [{"category": "game-cards",
                                                         "percent": "5"}]}}})
        docs.append({"apiVersion": API_VERSION, "kind": "SubSite",
                     "metadata": {"name": name}, "spec": subsite_spec(name, prefix)})
    return docs


def subsite_spec(name: str, prefix: str) -> dict[str, Any]:
    return {"displayName": name, "owner": {"name": "Bench", "email": "b@bench.example"},
            "licenseRef": name, "rolePolicyRef": f"{prefix}-rp",
            "domain": f"{name}.bench.example",
            "members": [{"name": "admin", "email": "a@bench.example", "role": "site-admin",
                         "kubernetesUser": f"{name}-admin"}],
            "storefront": {"replicas": 1}, "database": {"reclaimPolicy": "Delete"}}


def remove_batch_site(kubectl: Any, name: str, rolepolicy: str) -> None:
    """Delete a site made by :func:`batch_objects` (waiting for its finalizer: the
    operator that reclaims it must still run), its License and its RolePolicy."""
    kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true",
            "--timeout=120s", timeout=150)
    kubectl("delete", "license", name, "--ignore-not-found")
    kubectl("delete", "rolepolicy", rolepolicy, "--ignore-not-found")
