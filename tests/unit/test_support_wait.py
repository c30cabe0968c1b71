"""Deadlines in tests stretch with the machine's load, within a bound (tests/support/wait.py):
the same claim is checked as written on a quiet machine and still fails a real regression
on a loaded one."""

from __future__ import annotations

import time

import pytest

from tests.support import wait


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch):
    def set_load(avg: float, cores: int = 2) -> None:
        monkeypatch.setattr(wait.os, "getloadavg", lambda: (avg, avg, avg))
        monkeypatch.setattr(wait.os, "cpu_count", lambda: cores)
    return set_load


@pytest.mark.parametrize(("avg", "factor"), [
    (0.0, 1.0), (1.5, 1.0), (2.0, 1.0), (4.0, 2.0), (10.0, 5.0), (12.0, 6.0), (40.0, 6.0),
])
def test_the_factor_is_load_per_core_between_one_and_the_bound(load, avg, factor) -> None:
    load(avg)
    assert wait.load_factor() == factor
    assert wait.budget(10) == 10 * factor


def test_without_a_load_average_the_budget_is_as_written(monkeypatch) -> None:
    def no_load() -> tuple[float, float, float]:
        raise OSError("no load average here")
    monkeypatch.setattr(wait.os, "getloadavg", no_load)
    assert wait.budget(7) == 7


def test_wait_for_gives_a_loaded_machine_the_stretched_deadline(load) -> None:
    load(6.0)  # factor 3: 0.2 s becomes 0.6 s
    t0 = time.monotonic()
    ready_at = t0 + 0.4
    assert wait.wait_for(lambda: time.monotonic() >= ready_at, timeout=0.2,
                         interval=0.02) is True


def test_wait_for_still_fails_and_says_how_long_it_waited(load) -> None:
    load(6.0)
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0\.9s \(0\.3s on a quiet "
                                             r"machine, stretched by load\) waiting for x"):
        wait.wait_for(lambda: False, timeout=0.3, what="x", interval=0.02)
    assert 0.85 <= time.monotonic() - t0 < 3
    load(1.0)
    with pytest.raises(AssertionError, match=r"timed out after 0\.1s waiting for y"):
        wait.wait_for(lambda: False, timeout=0.1, what="y", interval=0.02)


def test_the_quiet_window_is_not_stretched(load) -> None:
    load(12.0)  # factor 6
    values = iter(range(1000))
    t0 = time.monotonic()
    # A value that changes every poll never gets its 0.1 s quiet window: fails at 6 x 0.2 s.
    with pytest.raises(AssertionError, match=r"never stayed unchanged for 0\.1s"):
        wait.wait_until_quiet(lambda: next(values), quiet_for=0.1, timeout=0.2,
                              interval=0.01)
    assert 1.1 <= time.monotonic() - t0 < 4
    t0 = time.monotonic()
    assert wait.wait_until_quiet(lambda: 1, quiet_for=0.1, timeout=0.2, interval=0.01) == 1
    assert time.monotonic() - t0 < 0.6


async def test_async_wait_for_is_stretched_too(load) -> None:
    load(8.0)  # factor 4: 0.1 s becomes 0.4 s
    ready_at = time.monotonic() + 0.25
    assert await wait.async_wait_for(lambda: time.monotonic() >= ready_at, within=0.1)
