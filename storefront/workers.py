"""Several worker processes in one pod (``kameng storefront --workers N``).

One Python process serves one core: past that, a pod given more CPU needs more processes.
The supervisor (this module's :func:`supervise`, the pod's PID 1 process) binds the public
and the ops port once and starts ``N`` workers, fresh interpreters of the same command that
inherit both listening sockets (the kernel hands each connection to one of them). It
restarts a worker that dies and stops them all on SIGTERM/SIGINT.

What must happen once per pod, not once per worker:

- background loops (catalogue sync, outbox, risk decisions, delivery and notification
  sweeps): only the worker holding the pod's leader lock (:class:`LeaderLock`, an ``flock``
  released by the kernel when its holder dies) runs them; another takes over within
  :data:`LEADER_POLL_SECONDS`. They are already safe across replicas (claims, SKIP LOCKED);
  the lock keeps the work and the connections proportional to pods, not processes;
- cached pages: one pod-wide counter (:mod:`.web.page_cache`) in the shared directory;
- metrics: Prometheus' multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` in the shared
  directory): every worker writes its samples there and any worker's ``/metrics`` answers
  for the whole pod, so counters are sums and a scrape never depends on which worker it hit;
- the database: the pod's pool size (``KAMENG_DB_POOL_SIZE``, within the site role's
  connection limit) is split between the workers, never multiplied by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("kameng.storefront.workers")

SHARED_DIR_ENV = "KAMENG_POD_SHARED_DIR"  # set by the supervisor for its workers
LISTEN_FDS_ENV = "KAMENG_LISTEN_FDS"  # "public,ops" file descriptors a worker inherits
POD_WORKERS_ENV = "KAMENG_POD_WORKERS"  # how many workers share the pod (its pool)
LEADER_POLL_SECONDS = 2.0
_RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0)


def shared_dir() -> Path | None:
    """This pod's shared directory when running as one of several workers."""
    value = os.environ.get(SHARED_DIR_ENV)
    return Path(value) if value else None


def worker_pool_size(pod_pool_size: int) -> int:
    """This worker's share of the pod's connections (at least 2: a request and a loop)."""
    return max(2, pod_pool_size // max(1, int(os.environ.get(POD_WORKERS_ENV, "1"))))


def inherited_sockets() -> tuple[socket.socket, socket.socket] | None:
    """The (public, ops) listening sockets the supervisor passed down, if any."""
    value = os.environ.get(LISTEN_FDS_ENV)
    if not value:
        return None
    public, ops = (socket.socket(fileno=int(fd)) for fd in value.split(","))
    return public, ops


class LeaderLock:
    """The pod's leader lock: held by at most one worker, released when it dies."""

    def __init__(self, directory: Path | None) -> None:
        self._path = directory / "leader.lock" if directory else None
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._path is None:  # a single process is its own leader
            return True
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def wait(self) -> None:
        """Return once this worker leads (at once when it is the only process)."""
        # Polling: an flock has no async wake-up, and a takeover within seconds is enough.
        while not self.try_acquire():  # noqa: ASYNC110
            await asyncio.sleep(LEADER_POLL_SECONDS)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def supervise(argv: Sequence[str], workers: int, host: str, port: int, ops_port: int) -> int:
    """Bind the ports, run ``workers`` copies of ``argv`` (the same ``kameng storefront``
    command with ``--workers 1``) on them until SIGTERM/SIGINT. Returns the exit status."""
    from prometheus_client import multiprocess

    public, ops = _listen(host, port), _listen(host, ops_port)
    shared = Path(tempfile.mkdtemp(prefix="kameng-pod-"))
    metrics_dir = shared / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, SHARED_DIR_ENV: str(shared), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           LISTEN_FDS_ENV: f"{public.fileno()},{ops.fileno()}", POD_WORKERS_ENV: str(workers)}
    fds = (public.fileno(), ops.fileno())
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start() -> subprocess.Popen[bytes]:
        # Our own interpreter and command line: no outside input.
        return subprocess.Popen([sys.executable, "-m", "kameng.cli.main", *argv],  # noqa: S603
                                env=env, pass_fds=fds)

    procs = [start() for _ in range(workers)]
    restarts = [0] * workers
    log.info("storefront workers started", extra={"workers": workers})
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if p.poll() is None or stopping:
                    continue
                multiprocess.mark_process_dead(p.pid, str(metrics_dir))
                delay = _RESTART_BACKOFF[min(restarts[i], len(_RESTART_BACKOFF) - 1)]
                log.error("storefront worker exited; restarting",
                          extra={"worker": i, "code": p.returncode, "delay": delay})
                time.sleep(delay)
                restarts[i] += 1
                procs[i] = start()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
        public.close()
        ops.close()
        shutil.rmtree(shared, ignore_errors=True)
    return 0
