"""The operator killed in the middle of reconciling converges after a restart, with no
duplicates, no rotated keys and no orphaned databases."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import yaml

from tests.support.operator import OperatorProcess
from tests.support.wait import budget, wait_until_quiet

from .test_operator_lifecycle import fresh_start, get, sample_objects, secret_value

SITES = [f"it-rst-{i}" for i in range(6)]
RP = "it-rst-rp"


def _configs(kubectl: Any) -> dict[str, dict[str, str]]:
    """site → data of its storefront-config ConfigMap (where one exists)."""
    out = {}
    for name in SITES:
        for item in get(kubectl, "configmaps", "-n", f"kameng-{name}")["items"]:
            if item["metadata"]["name"] == "storefront-config":
                out[name] = item.get("data", {})
    return out


def _secrets(kubectl: Any) -> dict[tuple[str, str], dict[str, str]]:
    """(site, Secret name) → data of every Secret the operator wrote for the sites."""
    out = {}
    for name in SITES:
        for item in get(kubectl, "secrets", "-n", f"kameng-{name}")["items"]:
            out[(name, item["metadata"]["name"])] = item.get("data", {})
    return out


def _freeze_once_a_config_is_written(op: OperatorProcess, kubectl: Any) -> None:
    """Pause the operator (SIGSTOP) at its first pause point where a site config exists:
    one every few API writes, read from its own counter (no kubectl round trip, which takes
    seconds on a loaded machine, while the operator runs on)."""
    step = op.api_writes() + 10
    deadline = time.monotonic() + budget(60)
    while time.monotonic() < deadline:
        if op.api_writes() >= step:
            op.pause()
            if _configs(kubectl):
                return
            op.resume()
            step = op.api_writes() + 3
        time.sleep(0.02)
    raise AssertionError("no site config written within the deadline")


def _settled(read: Any) -> Any:
    """``read()`` once two reads in a row agree: requests the operator sent just before it
    was frozen may still land in the API server."""
    last = read()
    while (now := read()) != last:
        last = now
    return now


def test_killed_mid_reconcile_converges_without_duplicates(
        devenv: dict[str, str], kubectl: Any, tmp_path: Any) -> None:
    docs: list[dict[str, Any]] = []
    for name in SITES:
        lic, rp, ss = sample_objects(name, RP)
        ss["spec"]["database"] = {"reclaimPolicy": "Delete"}
        docs += [lic, ss]
    docs.append(rp)
    coords = (devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"])
    op = OperatorProcess(*coords, tmp_path / "first.log").start()
    try:
        fresh_start(kubectl, *SITES)
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        # Kill mid-reconcile, once at least one site's config is written: a restarted
        # operator that has not seen the RolePolicy yet must keep that config's roles, not
        # rewrite them as {} (every member losing every permission, a second ReplicaSet).
        _freeze_once_a_config_is_written(op, kubectl)
        # Frozen (SIGSTOP), so what is read now is what the kill leaves behind: on a
        # loaded machine the operator would otherwise finish between a poll and the kill.
        before_kill, config_before = _settled(lambda: (_secrets(kubectl), _configs(kubectl)))
        ready = [n for n in SITES if get(kubectl, "subsite", n).get("status", {})
                 .get("phase") == "Ready"]
        op.kill()
        assert len(ready) < len(SITES), "operator finished before it was frozen"
        # Every Secret and site config written before the kill, to compare after the
        # restart: a restart must reuse keys and passwords, never rotate them.

        op = OperatorProcess(*coords, tmp_path / "second.log").start()
        for name in SITES:
            try:
                kubectl.wait_ready(f"subsite/{name}", 30)
            except AssertionError as exc:  # what the site and the operator were doing
                status = get(kubectl, "subsite", name).get("status", {})
                raise AssertionError(f"{exc}\nstatus: {json.dumps(status, indent=1)}\n"
                                     f"second operator's log:\n{op.log_tail(60)}") from None

        # First the inputs of the pod template: what the first operator wrote must be
        # what the second kept (else the check below only sees a second ReplicaSet).
        after = _secrets(kubectl)
        for key, data in before_kill.items():
            assert after.get(key) == data, f"{key} was rotated by the restart"
        assert {name for _, name in after} == {"storefront-db", "storefront-redis",
                                               "storefront-keys", "license"}
        for key, cfg in config_before.items():
            assert _configs(kubectl).get(key) == cfg, f"{key} changed across the restart"
        with psycopg.connect(devenv["pg_admin_dsn"]) as conn:
            dbs = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'kameng_it_rst_%' "
                "ORDER BY 1").fetchall()]
        assert dbs == sorted("kameng_" + n.replace("-", "_") for n in SITES)
        for name in SITES:
            ns = f"kameng-{name}"
            # The Secret's password is the one PostgreSQL accepted.
            dsn = secret_value(kubectl, ns, "storefront-db", "dsn")
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            assert len(get(kubectl, "deployments", "-n", ns)["items"]) == 1
            # One ReplicaSet: the restart changed nothing in the pod template (keys and
            # passwords were reused, not regenerated).
            assert len(get(kubectl, "replicasets", "-n", ns)["items"]) == 1, name
            assert len(get(kubectl, "secrets", "-n", ns)["items"]) == 4
        # Converged means quiet (polled: settling takes longer on a loaded machine).
        wait_until_quiet(op.api_writes, quiet_for=5, timeout=60, what="API writes")
    finally:
        if not op.running():  # failed before the restart: the finalizers need an operator
            op = OperatorProcess(*coords, tmp_path / "cleanup.log").start()
        kubectl("delete", "subsite", *SITES, "--ignore-not-found", "--wait=true",
                "--timeout=60s", timeout=90)
        op.stop()
        kubectl("delete", "license", *SITES, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
    with psycopg.connect(devenv["pg_admin_dsn"]) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                            "'kameng_it_rst_%'").fetchone()
    assert left == (0,), json.dumps(left)
