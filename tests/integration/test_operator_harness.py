"""The test harness itself: one failing operator fixture must not fail the modules after
it (issue 15: a Lease left by a leaked operator turned one failure into a cascade).

A pytest run of its own, on the real cluster, with three generated modules: the first's
operator fixture is followed by a second fixture that raises, and its cleanup then fails
before it stops the operator (a ``kubectl delete --wait`` timing out); the second's
fixture raises right after its operator started; the third only needs an operator to
start. Before the guard both leaked operators kept renewing the Lease and the third
module's operator refused to start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.support.operator import pid_alive

ROOT = Path(__file__).resolve().parents[2]

COMMON = """
import os
from pathlib import Path

import pytest

from tests.support.operator import OperatorProcess

COORDS = (os.environ["KUBECONFIG"], os.environ["KAMENG_PG_ADMIN_DSN"],
          os.environ["KAMENG_REDIS_URL"])


def started(op):
    # The outer test kills what is left, whatever the guard did.
    with Path(os.environ["PIDS_FILE"]).open("a") as f:
        f.write(f"{op.proc.pid}\\n")
    return op
"""

FIRST = COMMON + """

@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    op = OperatorProcess(*COORDS, tmp_path_factory.mktemp("a") / "operator.log")
    started(op.start())
    yield op
    raise RuntimeError("cleanup failed before op.stop(), like a kubectl delete timing out")
    op.stop()


@pytest.fixture(scope="module")
def sites(operator):
    raise RuntimeError("the second fixture fails")


def test_uses_both(sites):
    pass


def test_uses_both_again(sites):
    pass
"""

SECOND = COMMON + """

@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    op = OperatorProcess(*COORDS, tmp_path_factory.mktemp("b") / "operator.log")
    started(op.start())
    raise RuntimeError("a setup step after the start fails")
    yield op
    op.stop()


def test_uses_it(operator):
    pass
"""

THIRD = COMMON + """

def test_the_next_module_gets_its_operator(tmp_path):
    op = OperatorProcess(*COORDS, tmp_path / "operator.log")
    started(op.start())
    assert op.alive()
    op.stop()
"""

MODULES = {"test_1_first.py": FIRST, "test_2_second.py": SECOND, "test_3_third.py": THIRD}


def test_a_failing_operator_fixture_does_not_fail_the_next_modules(
        devenv: dict[str, str], tmp_path: Path) -> None:
    for name, text in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    pids = tmp_path / "pids"
    junit = tmp_path / "junit.xml"
    # tests.support importable, but not the repository root itself: its operator/
    # directory would shadow the standard library's `operator` module.
    (tmp_path / "path").mkdir()
    for package in ("tests", "hack"):
        (tmp_path / "path" / package).symlink_to(ROOT / package)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "path"), "PIDS_FILE": str(pids)}
    try:
        proc = subprocess.run(
            [sys.executable, "-P", "-m", "pytest", "-p", "tests.support.operator_guard",
             "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
             "--rootdir", str(tmp_path), f"--junitxml={junit}", "-q",
             *(str(tmp_path / name) for name in sorted(MODULES))],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
        outcome = {case.get("name"): [child.tag for child in case]
                   for case in ET.parse(junit).getroot().iter("testcase")}
        # The two broken modules fail as they should; the third is untouched by them.
        assert outcome["test_the_next_module_gets_its_operator"] == [], \
            proc.stdout[-6000:]
        assert outcome["test_uses_both"] == ["error"]
        assert outcome["test_uses_it"] == ["error"]
        assert "OperatorLeftRunning" in proc.stdout, proc.stdout[-3000:]
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 3
        # ... and nothing the run started outlives it.
        assert not [p for p in started if pid_alive(p)]
    finally:
        for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
