"""Past one database server: sites are placed across two real PostgreSQL servers
(`hack/devenv up --postgres 2`) by capacity and labels, the placement is recorded
(annotation + status) and never changes by accident, and a requested move copies the
data to the other server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from kameng.api.kinds import DATABASE_SERVER_ANNOTATION, MOVE_DATABASE_ANNOTATION
from kameng.provision.names import pg_identifier
from tests.conftest import ROOT, _parse_exports
from tests.support.operator import OperatorProcess, batch_objects
from tests.support.wait import wait_for

PREFIX = "it-place"
COUNT = 4  # two per server fills both (capacity 2 each)


@pytest.fixture(scope="module")
def second_pg(devenv: dict[str, str]) -> str:
    out = subprocess.run([str(ROOT / "hack" / "devenv"), "up", "--postgres", "2"], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return _parse_exports(out)["KAMENG_PG_ADMIN_DSN_2"]


def _names() -> list[str]:
    return [f"{PREFIX}-{i:04d}" for i in range(COUNT + 1)]


def _cleanup(kubectl: Any) -> None:
    kubectl("delete", "subsite", *_names(), "--ignore-not-found", "--wait=true",
            "--timeout=300s", timeout=330)
    kubectl("delete", "license", *_names(), "--ignore-not-found")
    kubectl("delete", "rolepolicy", f"{PREFIX}-rp", "--ignore-not-found")


def _drop_leftovers(dsns: list[str]) -> None:
    """Retained databases of an earlier run would be another SubSite's data."""
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in _names():
                ident = pg_identifier(name)
                conn.execute(f'DROP DATABASE IF EXISTS "{ident}" WITH (FORCE)')
                conn.execute(f'DROP ROLE IF EXISTS "{ident}"')


@pytest.fixture(scope="module")
def servers(devenv: dict[str, str], second_pg: str) -> dict[str, str]:
    return {"pg-a": devenv["pg_admin_dsn"], "pg-b": second_pg}


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, servers: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    d = tmp_path_factory.mktemp("place")
    conf = d / "servers.yaml"
    conf.write_text(yaml.safe_dump({"servers": [
        {"name": "pg-a", "adminDsnEnv": "IT_PG_A", "capacity": 2, "labels": {"tier": "std"}},
        {"name": "pg-b", "adminDsnEnv": "IT_PG_B", "capacity": 2, "labels": {"tier": "std"}},
    ]}))
    _cleanup(kubectl)
    _drop_leftovers(list(servers.values()))
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         d / "operator.log",
                         extra_env={"KAMENG_PG_SERVERS_FILE": str(conf),
                                    "IT_PG_A": servers["pg-a"],
                                    "IT_PG_B": servers["pg-b"]}).start(wait=120)
    try:
        yield op
    finally:
        _cleanup(kubectl)
        op.stop()
        _drop_leftovers(list(servers.values()))


def _site(kubectl: Any, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "subsite", name, "-o", "json").stdout)


def _role(dsn: str, name: str) -> tuple[bool] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                            (pg_identifier(name),)).fetchone()


def _ready_on(kubectl: Any, name: str) -> str | None:
    o = _site(kubectl, name)
    st = o.get("status") or {}
    if st.get("phase") != "Ready" or st.get("observedGeneration") != o["metadata"]["generation"]:
        return None
    return st.get("databaseServer")


def test_placement_across_two_servers_and_move(operator: OperatorProcess, kubectl: Any,
                                               servers: dict[str, str]) -> None:
    docs = batch_objects(PREFIX, COUNT + 1)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[:1 + 2 * COUNT]), timeout=120)
    names = _names()[:COUNT]
    placed = {n: wait_for(lambda n=n: _ready_on(kubectl, n), 600, f"{n} Ready")
              for n in names}
    # Capacity-aware: two on each server, each recorded in annotation and status.
    assert sorted(placed.values()) == ["pg-a", "pg-a", "pg-b", "pg-b"], placed
    for n, server in placed.items():
        o = _site(kubectl, n)
        assert o["metadata"]["annotations"][DATABASE_SERVER_ANNOTATION] == server
        assert _role(servers[server], n) is not None
        other = "pg-b" if server == "pg-a" else "pg-a"
        assert _role(servers[other], n) is None

    # Both full: the fifth site is not squeezed in anywhere, and says why.
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[-2:]), timeout=60)
    fifth = _names()[COUNT]

    def refused() -> bool:
        ready = next((c for c in (_site(kubectl, fifth).get("status") or {})
                      .get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("reason") == "NoDatabaseServer"
    wait_for(refused, 300, "the fifth site refused for lack of room")
    assert _role(servers["pg-a"], fifth) is None
    assert _role(servers["pg-b"], fifth) is None
    kubectl("delete", "subsite", fifth, "--wait=true", "--timeout=120s", timeout=150)

    # An edited annotation alone does not move a site: the data stays where it is.
    first, second = names[0], names[1]
    src = placed[first]
    dst = "pg-b" if src == "pg-a" else "pg-a"
    kubectl("annotate", "--overwrite", "subsite", second,
            f"{DATABASE_SERVER_ANNOTATION}={'pg-b' if placed[second] == 'pg-a' else 'pg-a'}")
    # A move request: the site's data follows it to the other server.
    site_db = make_conninfo(servers[src], dbname=pg_identifier(first))
    with psycopg.connect(site_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE moved_marker (v text)")
        conn.execute("INSERT INTO moved_marker VALUES ('still here')")
    # The capacity check does not apply to a requested move (a person chose it).
    kubectl("annotate", "--overwrite", "subsite", first, f"{MOVE_DATABASE_ANNOTATION}={dst}")

    def moved() -> bool:
        o = _site(kubectl, first)
        return (_ready_on(kubectl, first) == dst and MOVE_DATABASE_ANNOTATION not in
                o["metadata"].get("annotations", {}))
    wait_for(moved, 600, f"{first} moved to {dst} and Ready")
    assert _site(kubectl, first)["metadata"]["annotations"][DATABASE_SERVER_ANNOTATION] == dst
    with psycopg.connect(make_conninfo(servers[dst], dbname=pg_identifier(first)),
                         autocommit=True) as conn:
        assert conn.execute("SELECT v FROM moved_marker").fetchall() == [("still here",)]
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = "
                             "'moved_marker'").fetchone()
        assert owner == (pg_identifier(first),)
    # The old copy is kept (a move never deletes), its role locked out.
    assert _role(servers[src], first) == (False,)
    secret = json.loads(kubectl("get", "secret", "-n", f"kameng-{first}", "storefront-db",
                                "-o", "json").stdout)
    import base64
    dsn = base64.b64decode(secret["data"]["dsn"]).decode()
    port = servers[dst].rsplit(":", 1)[1].split("/")[0]
    assert f":{port}/" in dsn

    # The site whose annotation was edited stayed, and the disagreement was reported.
    assert _site(kubectl, second)["status"]["databaseServer"] == placed[second]
    events = json.loads(kubectl("get", "events", "-n", "default", "-o", "json").stdout)
    assert any(e["reason"] == "DatabaseServerMismatch" and
               e["involvedObject"]["name"] == second for e in events["items"])


def test_devenv_second_server_is_separate(second_pg: str, devenv: dict[str, str]) -> None:
    with psycopg.connect(second_pg) as a, psycopg.connect(devenv["pg_admin_dsn"]) as b:
        pa = a.execute("SHOW port").fetchone()
        pb = b.execute("SHOW port").fetchone()
    assert pa != pb
    assert Path(ROOT / "hack" / "devenv").exists()
