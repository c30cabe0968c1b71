"""Run `kameng operator` as a real subprocess — for integration tests and the benchmark.

Operators run ``--standalone`` unless given a peering name: each test controls exactly
which operators exist, and a standalone one refuses to start next to another.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kameng.api.common import API_VERSION
from tests.support.net import free_port


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

    def start(self, wait: float = 120.0) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
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

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crashed pod."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_bytes(self) -> int:
        """Peak resident set size (VmHWM) of the operator process."""
        if not self.proc:
            return 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0


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
