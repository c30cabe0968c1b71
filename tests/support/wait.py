"""Waiting in tests: poll against a deadline, never sleep-then-assert.

A fixed sleep is either too short on a loaded machine (flaky) or too long everywhere
(slow). These helpers return as soon as the condition holds and fail with what they last
saw when the deadline passes. Budgets are generous (the CI machine has 2 cores shared
with other jobs): a deadline is what a *broken* system would never meet, not how long a
healthy one takes. Measured at load average ≥ 4 (docs/mutation.md, "Timing").
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


# A budget stretches at most this much: beyond it a slow result is a regression, not load.
MAX_LOAD_FACTOR = 6.0


def load_factor() -> float:
    """How much slower than a quiet machine this one is right now: runnable processes
    per core (the 1-minute load average), at least 1, at most :data:`MAX_LOAD_FACTOR`."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    return min(MAX_LOAD_FACTOR, max(1.0, load / (os.cpu_count() or 1)))


def budget(seconds: float) -> float:
    """A time budget measured on a quiet machine, stretched by the current load.

    For a deadline that is also a claim ("Ready within 10 s"): on an idle machine the
    claim is checked as written, so a regression still fails; on the loaded 2-core CI
    machine (load average 10 = factor 5) a healthy system gets the time the load takes
    from it, and no more than :data:`MAX_LOAD_FACTOR` times the claim.
    """
    return seconds * load_factor()


def _took(seconds: float, limit: float) -> str:
    return f"{limit:.3g}s" if limit == seconds else \
        f"{limit:.3g}s ({seconds:g}s on a quiet machine, stretched by load)"


def wait_for(pred: Callable[[], T], timeout: float = 30.0, what: str = "",
             interval: float = 0.2) -> T:
    """The first truthy value of ``pred()`` before ``timeout`` seconds pass, as measured
    on a quiet machine: the deadline is :func:`budget` of it (stretched by the load).

    An ``AssertionError`` raised by ``pred`` counts as "not yet" (so a predicate may use
    plain asserts); its message is reported if the deadline passes.
    """
    limit = budget(timeout)
    deadline = time.monotonic() + limit
    last: Any = None
    while True:
        try:
            value = pred()
            last = value
        except AssertionError as exc:
            value, last = None, f"AssertionError: {exc}"
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {_took(timeout, limit)} waiting for "
                                 f"{what or pred}; last seen: {last!r:.500}")
        time.sleep(interval)


async def async_wait_for(pred: Callable[[], Any], within: float = 30.0, what: str = "",
                         interval: float = 0.05) -> Any:
    """:func:`wait_for` inside an event loop: ``pred`` may be sync or return an awaitable,
    and the loop keeps running (the thing waited for may be a task of the same loop)."""
    limit = budget(within)
    deadline = time.monotonic() + limit
    last: Any = None
    while True:
        last = pred()
        if isinstance(last, Awaitable):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {_took(within, limit)} waiting for "
                                 f"{what or pred}; last seen: {last!r:.500}")
        await asyncio.sleep(interval)


def wait_until_quiet(read: Callable[[], Any], quiet_for: float, timeout: float,
                     what: str = "", interval: float = 0.25) -> Any:
    """Wait until ``read()`` stays the same for ``quiet_for`` seconds; return that value.

    Replaces "sleep a bit to let things settle, then assert nothing changes for N s": on a
    loaded machine settling takes longer (this waits for it, up to ``timeout``), and a real
    regression — something that keeps changing more often than every ``quiet_for`` seconds
    — never gets a quiet window and fails at ``timeout`` (stretched by the load; the
    quiet window is not: it is the claim).
    """
    limit = budget(timeout)
    deadline = time.monotonic() + limit
    value = read()
    since = time.monotonic()
    history = [value]
    while True:
        now = time.monotonic()
        if now - since >= quiet_for:
            return value
        if now >= deadline:
            raise AssertionError(
                f"{what or read} never stayed unchanged for {quiet_for:g}s within "
                f"{_took(timeout, limit)}; values seen: {history[-10:]!r:.500}")
        time.sleep(interval)
        new = read()
        if new != value:
            value, since = new, time.monotonic()
            history.append(new)
