"""Shared fixtures. Integration tests run against `hack/devenv`: a real kube-apiserver
(with controller-manager, scheduler and kwok), PostgreSQL and Redis on loopback, in the
tests' own environment directory (`hack/devenv test-dir`), never the demo's: the demo's
operator would fight the tests' operators over the same SubSites.

If the environment cannot start, integration tests fail loudly. They skip only when a
person sets KAMENG_ALLOW_SKIP=1 (CI never does).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from hack.devenv import test_dir

# No test operator outlives its test or module (tests/support/operator_guard.py says why).
from tests.support.operator_guard import (  # noqa: F401 - registers the fixtures and hook
    _stop_operators_of_module,
    _stop_operators_of_test,
    pytest_sessionfinish,
)
from tests.support.wait import budget

ROOT = Path(__file__).resolve().parents[1]
# Set before anything runs, so every `hack/devenv` a test starts (and pytest run without
# hack/test, from a shell where the demo's environment is exported) meets the tests' one.
os.environ["KAMENG_DEVENV_DIR"] = str(test_dir())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _parse_exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        key, _, value = line[len("export "):].partition("=")
        if key == "PATH":
            continue
        env[key] = shlex.split(value)[0]
    return env


@pytest.fixture(scope="session")
def devenv() -> dict[str, str]:
    """Start (or reuse) the dev environment and return its coordinates."""
    try:
        out = subprocess.run([str(ROOT / "hack" / "devenv"), "up"], check=True,
                             capture_output=True, text=True, timeout=3600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        detail = getattr(e, "stderr", "") or ""
        msg = f"hack/devenv up failed, integration tests cannot run:\n{detail[-4000:]}"
        if os.environ.get("KAMENG_ALLOW_SKIP") == "1":
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    env = _parse_exports(out.stdout)
    # Subprocesses (operators, the demo) inherit the tests' cluster, not a shell's.
    os.environ.update(env)
    return {
        "kubeconfig": env["KUBECONFIG"],
        "pg_admin_dsn": env["KAMENG_PG_ADMIN_DSN"],
        "redis_url": env["KAMENG_REDIS_URL"],
        "bin_dir": env["KAMENG_BIN_DIR"],
        "state_dir": env["KAMENG_DEVENV_DIR"],
    }


@pytest.fixture(scope="session")
def kubeconfig(devenv: dict[str, str]) -> str:
    return devenv["kubeconfig"]


@pytest.fixture(scope="session")
def pg_admin_dsn(devenv: dict[str, str]) -> str:
    return devenv["pg_admin_dsn"]


@pytest.fixture(scope="session")
def redis_url(devenv: dict[str, str]) -> str:
    return devenv["redis_url"]


class Kubectl:
    """The pinned kubectl against the dev cluster; returns CompletedProcess."""

    def __init__(self, bin_dir: str, kubeconfig: str) -> None:
        self.bin = str(Path(bin_dir) / "kubectl")
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.bin, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr}{proc.stdout}")
        return proc

    def wait_ready(self, obj: str, within: float) -> None:
        """`kubectl wait --for=condition=Ready obj` for ``within`` seconds as measured on
        a quiet machine, stretched by the current load (:func:`budget`)."""
        seconds = budget(within)
        self("wait", "--for=condition=Ready", obj, f"--timeout={seconds:.0f}s",
             timeout=seconds + 30)


@pytest.fixture(scope="session")
def kubectl(devenv: dict[str, str]) -> Kubectl:
    return Kubectl(devenv["bin_dir"], devenv["kubeconfig"])
