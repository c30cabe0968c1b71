"""PostgreSQL and Redis servers of a test's own, to kill and restart under load (the dev
environment's are shared by every test). Loopback, free ports, throwaway data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

from hack.devenv import ensure_packages

from .net import free_port


def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not up within {timeout}s")


class PrivateRedis:
    """redis-server with a password for the admin; no persistence, or (``persistent``)
    an append-only file synced on every write. Neither keeps ACL users."""

    def __init__(self, workdir: Path, persistent: bool = False) -> None:
        self.persistent = persistent
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "",
             *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
               else ["--appendonly", "no"]),
             "--requirepass", self.password, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(self.answers, 20, "redis-server")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster in ``workdir`` (run as the Debian package's ``postgres`` user
    when the tests run as root: PostgreSQL refuses root). :meth:`crash` is a SIGKILL of
    the postmaster and its backends, as a lost pod or node: recovery replays the WAL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.password = uuid.uuid4().hex
        # Its own directory under the system's temp dir: pytest's are private to root,
        # and the postgres user must reach its data directory.
        self.dir = Path(tempfile.mkdtemp(prefix="kameng-test-pg-"))
        self.dir.chmod(0o755)
        self.bin = Path(ensure_packages()["pg_bin"])
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen[bytes] | None = None
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
            shutil.chown(pwfile, self.user, self.user)
        subprocess.run(self._as_user([str(self.bin / "initdb"), "-D", str(self.dir / "data"),
                                      "-U", "kameng_admin", f"--pwfile={pwfile}",
                                      "--auth=scram-sha-256", "--encoding=UTF8",
                                      "--locale=C.UTF-8", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        pwfile.unlink()

    def _as_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if self.user else argv

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://kameng_admin:{self.password}@127.0.0.1:{self.port}/postgres"

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def start(self) -> PrivatePostgres:
        self.proc = subprocess.Popen(self._as_user([
            str(self.bin / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
            "-c", "max_connections=300", "-c", "log_min_messages=fatal"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _until(self.answers, 60, "PostgreSQL")
        return self

    def crash(self) -> None:
        """SIGKILL to the whole process group: no shutdown checkpoint, no goodbye."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            # Backends die with their postmaster's group; the shared memory goes with them.
            time.sleep(0.2)

    def remove(self) -> None:
        self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)
