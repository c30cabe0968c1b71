"""`hack/devenv` is idempotent and reports what runs."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT, _parse_exports


def _devenv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "hack" / "devenv"), *args], capture_output=True,
                          text=True, timeout=600, check=False)


def test_up_again_reuses_the_running_environment(devenv):
    again = _devenv("up")
    assert again.returncode == 0, again.stderr
    env = _parse_exports(again.stdout)
    # Same servers, same credentials: nothing was restarted.
    assert env["KUBECONFIG"] == devenv["kubeconfig"]
    assert env["KAMENG_PG_ADMIN_DSN"] == devenv["pg_admin_dsn"]
    assert env["KAMENG_REDIS_URL"] == devenv["redis_url"]
    assert "restarting" not in again.stderr


def test_status_lists_every_component(devenv):
    status = _devenv("status")
    assert status.returncode == 0, status.stdout
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                      "kwok", "postgres", "redis"):
        line = next(ln for ln in status.stdout.splitlines() if ln.startswith(component + " "))
        assert "running" in line
    assert "/readyz" in status.stdout


def test_backing_services_accept_the_exported_credentials(devenv):
    import psycopg
    import redis

    with psycopg.connect(devenv["pg_admin_dsn"], connect_timeout=5) as conn:
        assert conn.execute("select current_setting('server_version_num')::int").fetchone()[0] \
            >= 150000
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user"
                            ).fetchone()[0] is True
    r = redis.Redis.from_url(devenv["redis_url"])
    assert r.ping() is True
    # Without the password the server refuses: tenants cannot just walk in.
    anon = redis.Redis(host=r.connection_pool.connection_kwargs["host"],
                       port=r.connection_pool.connection_kwargs["port"])
    with pytest.raises((redis.AuthenticationError, redis.ResponseError), match=r"(?i)auth"):
        anon.ping()
