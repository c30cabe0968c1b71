"""pytest plugin: no test operator outlives the test or module that started it.

A fixture that starts an operator and then fails — a later step of the same fixture
raises, or its cleanup raises before it reaches ``op.stop()`` (a ``kubectl delete
--wait`` that times out after a second fixture failed half-way) — used to leave that
operator running for the rest of the session. Its Lease then made every later module's
standalone operator refuse to start ("another kameng operator is active"): one failure
became dozens. These autouse fixtures stop, at the end of each test and of each module,
every operator started inside it that still runs (SIGTERM, SIGKILL after a deadline), and
warn naming it, so the first failure stays the only one.

Autouse fixtures are set up before the other fixtures of their scope and torn down after
them, so a fixture that does stop its operator has done so by then; the net only catches
what was left. Loaded by ``tests/conftest.py``; ``-p tests.support.operator_guard`` for
a pytest run outside ``tests/``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from tests.support.operator import OperatorProcess, started_mark, stop_started_since


class OperatorLeftRunning(UserWarning):
    """An operator its test or fixture did not stop (stopped here instead)."""


def _stop_left(mark: int, where: str, *, test_end: bool = False) -> None:
    left: list[OperatorProcess] = stop_started_since(mark, test_end=test_end)
    for op in left:
        warnings.warn(OperatorLeftRunning(
            f"an operator started in {where} was still running at its end (its fixture "
            f"never reached stop()); stopped it. Log: {op.log_path}"), stacklevel=1)


@pytest.fixture(autouse=True, scope="module")
def _stop_operators_of_module(request: pytest.FixtureRequest) -> Iterator[None]:
    mark = started_mark()
    yield
    _stop_left(mark, f"module {request.module.__name__}")


@pytest.fixture(autouse=True)
def _stop_operators_of_test(request: pytest.FixtureRequest) -> Iterator[None]:
    mark = started_mark()
    yield
    _stop_left(mark, f"test {request.node.nodeid}", test_end=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Anything still running (a session-scoped fixture, an interrupted run) is stopped
    # before pytest exits: an orphaned operator would hold the Lease against the next run.
    stop_started_since(0)
