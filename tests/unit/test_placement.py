"""Placement across several PostgreSQL servers, and CloudNativePG resolution: pure rules."""

from __future__ import annotations

import base64

import pytest

from kameng.api.kinds import DATABASE_SERVER_ANNOTATION as ANN
from kameng.provision.placement import ServerInfo, choose, decide
from kameng.provision.servers import (
    CnpgRef,
    ServerConfigError,
    ServerEntry,
    parse,
    resolve_cnpg,
)

A = ServerInfo("pg-a", 2, {"tier": "std"})
B = ServerInfo("pg-b", 4, {"tier": "std"})
C = ServerInfo("pg-c", 0, {"tier": "gold"})


def test_least_loaded_by_capacity_with_room_and_matching_labels() -> None:
    assert choose([A, B], {}, None) == A  # a tie goes to the first listed
    assert choose([A, B], {"pg-a": 1}, None) == B  # 1/2 > 0/4
    assert choose([A, B], {"pg-a": 1, "pg-b": 2}, None) == A  # 1/2 == 2/4: first
    assert choose([A, B], {"pg-a": 2, "pg-b": 1}, None) == B  # A full
    assert choose([A, B], {"pg-a": 2, "pg-b": 4}, None) is None
    assert choose([A, B, C], {}, {"tier": "gold"}) == C
    assert choose([A, B], {}, {"tier": "gold"}) is None


def test_unlimited_server_does_not_take_everything() -> None:
    # Counted against the largest bounded capacity (4): 3/4 on C vs 1/2 on A.
    assert choose([C, A], {"pg-c": 3, "pg-a": 1}, None) == A


def test_recorded_placement_never_moves_by_itself() -> None:
    servers = [A, B]
    # Recorded: kept, even when another server is emptier or this one is "full".
    d = decide({ANN: "pg-a"}, "pg-a", servers, {"pg-a": 9}, None, None, None)
    assert (d.server, d.annotate, d.problem) == ("pg-a", False, None)
    # Status lost (restored from Git): the annotation still holds it.
    assert decide({ANN: "pg-b"}, None, servers, {}, None, None, None).server == "pg-b"
    # Annotation lost: the status holds it, and the annotation is written again.
    d = decide({}, "pg-b", servers, {}, None, None, None)
    assert (d.server, d.annotate) == ("pg-b", True)
    # Someone edits the annotation: the data stays where status says, with a warning.
    d = decide({ANN: "pg-b"}, "pg-a", servers, {}, None, None, None)
    assert d.server == "pg-a"
    assert d.move_to is None
    assert d.warning
    assert "move-database-to=pg-b" in d.warning
    # A site made before placement existed: recorded where its DSN points.
    d = decide({}, None, servers, {}, None, "pg-b", None)
    assert (d.server, d.annotate) == ("pg-b", True)


def test_new_site_placed_or_refused() -> None:
    d = decide({}, None, [A, B], {"pg-a": 2}, None, None, None)
    assert (d.server, d.annotate) == ("pg-b", True)
    d = decide({}, None, [A, B], {"pg-a": 2, "pg-b": 4}, None, None, None)
    assert d.server is None
    assert d.problem
    assert "pg-a 2/2" in d.problem


def test_server_gone_from_the_list_is_a_problem_not_a_new_placement() -> None:
    d = decide({ANN: "pg-x"}, "pg-x", [A, B], {}, None, None, None)
    assert d.server is None
    assert d.problem
    assert "pg-x" in d.problem


def test_move_requests() -> None:
    servers = [A, B]
    d = decide({ANN: "pg-a"}, "pg-a", servers, {}, None, None, "pg-b")
    assert (d.server, d.move_to) == ("pg-a", "pg-b")
    d = decide({ANN: "pg-b"}, "pg-b", servers, {}, None, None, "pg-b")
    assert d.move_to is None
    assert d.move_done
    d = decide({ANN: "pg-a"}, "pg-a", servers, {}, None, None, "pg-zz")
    assert d.move_to is None
    assert d.warning
    assert "pg-zz" in d.warning


def test_server_list_parsing() -> None:
    entries = parse("""
servers:
  - {name: a, adminDsnEnv: DSN_A, capacity: 3, labels: {tier: std}}
  - {name: b, cnpg: {cluster: shops, namespace: db}}
""", {"DSN_A": "postgresql://u:p@h:5433/postgres"})
    assert [e.info.name for e in entries] == ["a", "b"]
    assert entries[0].info.capacity == 3
    assert entries[0].admin_dsn
    assert entries[1].cnpg == CnpgRef("shops", "db")
    assert "p@" not in repr(entries[0])
    with pytest.raises(ServerConfigError, match="DSN_A"):
        parse("servers: [{name: a, adminDsnEnv: DSN_A}]", {})
    with pytest.raises(ServerConfigError, match="unique"):
        parse("servers: [{name: a, adminDsn: x}, {name: a, adminDsn: y}]", {})


def _b64(v: str) -> str:
    return base64.b64encode(v.encode()).decode()


def test_cnpg_cluster_resolved_by_cnpgs_conventions() -> None:
    entry = ServerEntry(ServerInfo("b"), cnpg=CnpgRef("shops", "db"))
    cluster = {"spec": {"enableSuperuserAccess": True}}
    secret = {"data": {"username": _b64("postgres"), "password": _b64("s3cr/t")}}
    s = resolve_cnpg(entry, cluster, secret)
    assert s.site_host == "shops-rw.db.svc"
    assert s.site_port == 5432
    assert s.admin_dsn.startswith("postgresql://postgres:s3cr%2Ft@shops-rw.db.svc:5432/")
    with pytest.raises(ServerConfigError, match="enableSuperuserAccess"):
        resolve_cnpg(entry, {"spec": {}}, None)
    with pytest.raises(ServerConfigError, match="does not exist"):
        resolve_cnpg(entry, None, None)
    with pytest.raises(ServerConfigError, match="password") as err:
        resolve_cnpg(entry, cluster, {"data": {"username": _b64("postgres")}})
    assert "s3cr" not in str(err.value)
