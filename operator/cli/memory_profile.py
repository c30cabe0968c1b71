"""Where a running process's memory goes, on request: ``KAMENG_MEMORY_PROFILE=<file>``
starts :mod:`tracemalloc` at start-up, and each ``SIGUSR2`` writes the live allocations,
grouped by the code that made them, to that file (``kill -USR2 <pid>``).

Off unless asked: tracing every allocation costs memory and CPU (so a profiled run's
timings are not comparable with an unprofiled one). The report names code, never data.
"""

from __future__ import annotations

import os
import re
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

ENV = "KAMENG_MEMORY_PROFILE"
FRAMES = 12
TOP = 40


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _owner_dirs() -> tuple[str, ...]:
    """Where kameng's and kopf's code lives (an editable install's ``kameng`` is not in a
    directory of that name)."""
    import importlib.util

    dirs = []
    for name in ("kameng", "kopf"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(str(Path(d)) + os.sep for d in spec.submodule_search_locations)
    return tuple(dirs)


def _short(filename: str) -> str:
    """A file name without the interpreter's or the virtualenv's prefix."""
    if "/site-packages/" in filename:
        return filename.rsplit("/site-packages/", 1)[-1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", filename)


def _ours_or_first(tb: tracemalloc.Traceback, owners: tuple[str, ...]) -> str:
    """The innermost frame in kameng or kopf (who asked for the memory), then where it
    was allocated: a dict made by ``json.loads`` for kopf's memory is kopf's."""
    frames = list(tb)
    owner = next((f for f in reversed(frames) if f.filename.startswith(owners)), None)
    where = frames[-1]
    head = f"{_short(where.filename)}:{where.lineno}"
    if owner is None or owner is where:
        return head
    return f"{_short(owner.filename)}:{owner.lineno} <- {head}"


def report(snapshot: tracemalloc.Snapshot, top: int = TOP) -> str:
    """Live allocations by owning line (see :func:`_ours_or_first`), largest first."""
    sizes: dict[str, list[int]] = {}
    owners = _owner_dirs()
    for stat in snapshot.statistics("traceback"):
        s = sizes.setdefault(_ours_or_first(stat.traceback, owners), [0, 0])
        s[0] += stat.size
        s[1] += stat.count
    total = sum(v[0] for v in sizes.values())
    lines = [f"rss {_rss_kib() / 1024:.1f} MiB; traced {total / 2**20:.1f} MiB "
             f"in {sum(v[1] for v in sizes.values())} blocks"]
    for where, (size, count) in sorted(sizes.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{size / 2**20:8.2f} MiB {size * 100 / max(total, 1):5.1f} % "
                     f"{count:9d}  {where}")
    return "\n".join(lines) + "\n"


def install(path: str | None = None) -> bool:
    """Start tracing and answer SIGUSR2 when ``path`` (default: $KAMENG_MEMORY_PROFILE)
    is set; returns whether it did."""
    target = path if path is not None else os.environ.get(ENV, "")
    if not target:
        return False
    tracemalloc.start(FRAMES)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        tmp = Path(target + ".tmp")
        tmp.write_text(report(tracemalloc.take_snapshot()))
        tmp.replace(target)  # a reader never sees half a report

    signal.signal(signal.SIGUSR2, dump)
    return True
