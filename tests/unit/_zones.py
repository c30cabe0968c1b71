"""A local time zone far from UTC for a test, so a time computed in the host's zone
instead of UTC shows (hosts and CI run in UTC, where the two are the same)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest


@pytest.fixture
def shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    assert time.localtime(0).tm_hour == 8
    yield
    monkeypatch.undo()
    time.tzset()
