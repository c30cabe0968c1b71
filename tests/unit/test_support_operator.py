"""The test harness's reading of the operator Lease before it starts a standalone
operator (tests/support/operator.py): wait out an exited holder, never take a live one's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.operator import lease_verdict, pid_alive

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOST = "box"


def spec(holder: str, renewed: datetime = NOW, seconds: int = 15) -> dict[str, object]:
    return {"holderIdentity": holder, "leaseDurationSeconds": seconds,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def verdict(s: dict[str, object], ours: frozenset[int] | set[int] = frozenset(),
            alive: frozenset[int] | set[int] = frozenset()) -> str:
    return lease_verdict(s, NOW, HOST, ours=lambda p: p in ours, alive=lambda p: p in alive)


@pytest.mark.parametrize("s", [
    {},  # no Lease
    spec(""),  # released at a clean stop
    spec("box/41", renewed=NOW - timedelta(seconds=16)),  # expired: its holder is gone
    {"holderIdentity": "box/41", "leaseDurationSeconds": 15},  # never renewed
])
def test_free(s: dict[str, object]) -> None:
    assert verdict(s, alive={41}) == "free"


def test_an_exited_holder_of_this_machine_is_waited_out() -> None:
    assert verdict(spec("box/41")) == "wait"
    assert verdict(spec("box/41", renewed=NOW - timedelta(seconds=15))) == "wait"  # boundary
    assert verdict(spec("box/41", renewed=NOW - timedelta(seconds=14)), ours={41}) == "wait"


def test_a_live_holder_is_ours_or_never_taken() -> None:
    assert verdict(spec("box/41"), ours={41}, alive={41}) == "ours"
    assert verdict(spec("box/41"), alive={41}) == "foreign"


def test_another_machines_holder_is_the_operators_to_judge() -> None:
    assert verdict(spec("pod-7/1")) == "elsewhere"
    assert verdict(spec("box")) == "elsewhere"
    assert verdict(spec("box/x1")) == "elsewhere"
    assert verdict(spec("other/box/41")) == "elsewhere"


def test_pid_alive_sees_a_zombie_as_exited() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Exited but not reaped yet: a zombie holds no Lease.
    for _ in range(200):
        if not pid_alive(child.pid):
            break
        time.sleep(0.05)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)


def test_the_guard_stops_an_operator_at_the_end_of_the_scope_that_made_it(tmp_path) -> None:
    from tests.support import operator as harness

    def made() -> harness.OperatorProcess:
        op = harness.OperatorProcess("kubeconfig", "dsn", "redis://", tmp_path / "op.log")
        return op

    def run(op: harness.OperatorProcess) -> None:  # a stand-in child, registered as start does
        op.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        harness._STARTED[op.proc.pid] = op

    module_op = made()
    run(module_op)
    test_mark = harness.started_mark()
    # A test restarts the module's operator (stop, then start): still the module's.
    module_op.stop(timeout=5)
    run(module_op)
    test_op = made()
    run(test_op)
    try:
        assert harness.stop_started_since(test_mark) == [test_op]
        assert not test_op.running()
        assert module_op.running()
        assert harness.stop_started_since(test_mark - 1) == [module_op]
        assert not module_op.running()
    finally:
        for op in (module_op, test_op):
            op.kill()


def test_an_operator_a_test_hands_to_its_module_outlives_the_test_not_the_module(
        tmp_path) -> None:
    """test_license_walk's walk replaces the module's operator for the tests after it:
    stopped at the walk's end, the next test found no operator at all."""
    from tests.support import operator as harness

    module_mark = harness.started_mark()
    handed = harness.OperatorProcess("kubeconfig", "dsn", "redis://", tmp_path / "a.log")
    own = harness.OperatorProcess("kubeconfig", "dsn", "redis://", tmp_path / "b.log")
    for op in (handed, own):
        op.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        harness._STARTED[op.proc.pid] = op
    assert handed.for_module() is handed
    try:
        assert harness.stop_started_since(module_mark, test_end=True) == [own]
        assert handed.running()
        assert harness.stop_started_since(module_mark) == [handed]
        assert not handed.running()
    finally:
        for op in (handed, own):
            op.kill()
