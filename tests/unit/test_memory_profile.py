"""The on-request memory report: it names the code holding the memory, largest first."""

from __future__ import annotations

import json
import os
import signal
import time
import tracemalloc
from pathlib import Path

from kameng.cli import memory_profile


def _hold() -> list[bytes]:
    return [bytes(1024) for _ in range(4096)]  # ~4 MiB from this line


HOLD_LINE = f"test_memory_profile.py:{_hold.__code__.co_firstlineno + 1}"


def test_report_names_the_line_holding_the_memory_first() -> None:
    tracemalloc.start(memory_profile.FRAMES)
    try:
        held = _hold()
        text = memory_profile.report(tracemalloc.take_snapshot(), top=5)
    finally:
        tracemalloc.stop()
    first = text.splitlines()[1]
    assert HOLD_LINE in first, text
    assert float(first.split()[0]) >= 4.0, text  # MiB column
    assert len(held) == 4096


def test_memory_made_by_a_library_is_reported_under_the_code_that_asked() -> None:
    assert memory_profile._owner_dirs(), "kameng and kopf are importable"
    here = (str(Path(__file__).parent) + os.sep,)
    tracemalloc.start(memory_profile.FRAMES)
    try:
        held = json.loads("[" + ",".join(['{"k": "v"}'] * 20000) + "]")
        stats = tracemalloc.take_snapshot().statistics("traceback")
    finally:
        tracemalloc.stop()
    owners = [memory_profile._ours_or_first(s.traceback, here) for s in stats[:3]]
    assert any("test_memory_profile.py" in o and "<- json/decoder.py" in o
               for o in owners), owners
    assert len(held) == 20000


def test_nothing_happens_without_the_variable(monkeypatch) -> None:
    monkeypatch.delenv(memory_profile.ENV, raising=False)
    assert memory_profile.install() is False
    assert not tracemalloc.is_tracing()


def test_sigusr2_writes_the_report_to_the_named_file(tmp_path: Path) -> None:
    target = tmp_path / "mem.txt"
    before = signal.getsignal(signal.SIGUSR2)
    try:
        assert memory_profile.install(str(target)) is True
        held = _hold()
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        text = target.read_text()
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, before)
    assert text.startswith("rss ")
    assert HOLD_LINE in text
    assert len(held) == 4096
