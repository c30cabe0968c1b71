"""Deletion reclaims per policy, and never hangs silently when PostgreSQL is away."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
import yaml

from tests.support.net import free_port
from tests.support.operator import OperatorProcess

from .test_operator_lifecycle import fresh_start, get, sample_objects, wait_for

RP = "it-del-rp"


def pg_state(dsn: str, ident: str) -> tuple[bool, bool, bool]:
    """(role exists, role can log in, database exists)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        role = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                            (ident,)).fetchone()
        db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (ident,)).fetchone()
    return role is not None, bool(role and role[0]), db is not None


def redis_user_exists(url: str, user: str) -> bool:
    return redis.Redis.from_url(url).acl_getuser(user) is not None


def create(kubectl: Any, name: str, policy: str) -> None:
    docs = sample_objects(name, RP)
    docs[2]["spec"]["database"] = {"reclaimPolicy": policy}
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def gone(kubectl: Any, *args: str) -> bool:
    return kubectl("get", *args, check=False).returncode != 0


@pytest.fixture
def operator(devenv: dict[str, str], tmp_path: Any) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path / "operator.log").start()
    yield op
    op.stop()


@pytest.fixture(scope="module", autouse=True)
def _remove_rolepolicy(kubectl: Any) -> Iterator[None]:
    # The tests' sites apply it; a later module's operator would keep reconciling it.
    yield
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found", check=False)


@pytest.mark.parametrize(("name", "policy"), [("it-del-drop", "Delete"),
                                              ("it-del-keep", "Retain")])
def test_deletion_removes_namespace_and_reclaims_per_policy(
        operator: OperatorProcess, kubectl: Any, pg_admin_dsn: str, redis_url: str,
        name: str, policy: str) -> None:
    ident = "kameng_" + name.replace("-", "_")
    fresh_start(kubectl, name)
    create(kubectl, name, policy)
    kubectl.wait_ready(f"subsite/{name}", 15)
    assert pg_state(pg_admin_dsn, ident) == (True, True, True)
    assert redis_user_exists(redis_url, f"kameng-site-{name}")

    kubectl("delete", "subsite", name, "--wait=true", "--timeout=30s", timeout=60)
    wait_for(lambda: gone(kubectl, "namespace", f"kameng-{name}"), 30, "namespace deleted")
    if policy == "Delete":
        assert pg_state(pg_admin_dsn, ident) == (False, False, False)
    else:
        # Data kept, retired credentials locked out.
        assert pg_state(pg_admin_dsn, ident) == (True, False, True)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{ident}"')
            conn.execute(f'DROP ROLE "{ident}"')
    # The copy of the keys stays exactly as long as the data it decrypts.
    backup = kubectl("get", "secret", f"kameng-keys-{name}", "-n", "kameng-system",
                     check=False).returncode == 0
    assert backup == (policy == "Retain")
    kubectl("delete", "secret", f"kameng-keys-{name}", "-n", "kameng-system",
            "--ignore-not-found")
    assert not redis_user_exists(redis_url, f"kameng-site-{name}")
    kubectl("delete", "license", name, "--ignore-not-found")


def test_unreachable_database_is_reported_and_can_be_released(
        devenv: dict[str, str], kubectl: Any, tmp_path: Any) -> None:
    """An operator whose PostgreSQL is unreachable: provisioning and deletion say so in
    status and Events (without credentials) and the documented annotation releases it."""
    name = "it-del-nodb"
    dead_dsn = f"postgresql://kameng_admin:NOT-A-REAL-PW@127.0.0.1:{free_port()}/postgres"
    op = OperatorProcess(devenv["kubeconfig"], dead_dsn, devenv["redis_url"],
                         tmp_path / "operator.log").start()
    try:
        kubectl("annotate", "subsite", name, "kameng.io/skip-reclaim=true", "--overwrite",
                check=False)
        fresh_start(kubectl, name)
        create(kubectl, name, "Delete")

        def db_down() -> dict[str, Any] | None:
            conds = {c["type"]: c for c in get(kubectl, "subsite", name)
                     .get("status", {}).get("conditions", [])}
            c = conds.get("DatabaseReady")
            return conds if c and c["status"] == "False" and "PostgreSQL" in c["message"] \
                else None

        conds = wait_for(db_down, 15, "DatabaseReady=False")
        assert conds["Ready"]["status"] == "False"
        # No Secret with a password PostgreSQL never accepted.
        assert gone(kubectl, "secret", "storefront-db", "-n", f"kameng-{name}")

        kubectl("delete", "subsite", name, "--wait=false")

        # The exit comes first: without PostgreSQL nothing can be exported, so nothing is
        # reclaimed either; status names both ways out.
        def export_failed() -> dict[str, Any] | None:
            st = get(kubectl, "subsite", name).get("status", {})
            stalled = {c["type"]: c for c in st.get("conditions", [])}.get("Stalled", {})
            return st if st.get("phase") == "Exporting" and \
                stalled.get("reason") == "ExportFailed" else None

        st = wait_for(export_failed, 20, "ExportFailed status")
        assert "PostgreSQL is unreachable" in json.dumps(st)
        assert "kameng.io/skip-reclaim" in json.dumps(st)
        assert "kameng.io/waive-export" in json.dumps(st)
        events = kubectl("get", "events", "-n", "default", "--field-selector",
                         f"involvedObject.name={name}", "-o", "json").stdout
        assert "ExportFailed" in events
        everything = kubectl("get", "subsite", name, "-o", "yaml").stdout + events
        assert "NOT-A-REAL-PW" not in everything
        assert not gone(kubectl, "subsite", name)  # held by the finalizer, visibly

        kubectl("annotate", "subsite", name, "kameng.io/skip-reclaim=true")
        wait_for(lambda: gone(kubectl, "subsite", name), 45, "SubSite released")
        wait_for(lambda: gone(kubectl, "namespace", f"kameng-{name}"), 30, "namespace gone")
    finally:
        op.stop()
        kubectl("delete", "license", name, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
        kubectl("delete", "secret", f"kameng-keys-{name}", "-n", "kameng-system",
                "--ignore-not-found")
        # Released without reclaiming: the manual clean-up the annotation asks for.
        redis.Redis.from_url(devenv["redis_url"]).acl_deluser(f"kameng-site-{name}")
