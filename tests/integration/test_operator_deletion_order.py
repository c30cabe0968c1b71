"""Deletion and reconcile are ordered: a reconcile that was already under way when a
SubSite's deletion began, or a late wake-up after it, never re-creates what the reclaim
removed. Drives the operator's own reconcile and reclaim in this process against the
real API server and PostgreSQL, so the interleaving is exact rather than lucky."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import redis
import yaml

from kameng.controller import deletion, reconcile
from kameng.controller.config import OperatorConfig
from kameng.controller.runtime import create_runtime

from .test_operator_lifecycle import get, sample_objects, wait_for

NAME, RP = "it-order", "it-order-rp"
IDENT = "kameng_it_order"


def db_exists(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (IDENT,)).fetchone() is not None


def drop_leftovers(pg_admin_dsn: str, redis_url: str) -> None:
    """What an interrupted run (or one against an operator without this fix) left."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{IDENT}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{IDENT}"')
    r = redis.Redis.from_url(redis_url)
    r.acl_deluser(f"kameng-site-{NAME}")
    r.hdel("kameng:acl-owners", f"kameng-site-{NAME}")
    r.close()


def _gone(kubectl: Any, *args: str) -> bool:
    return kubectl("get", *args, check=False).returncode != 0


async def test_no_reconcile_recreates_what_reclaim_removed(
        devenv: dict[str, str], kubectl: Any, pg_admin_dsn: str) -> None:
    # No operator runs in this module: the SubSite carries no finalizer, and only the
    # calls below act on it.
    kubectl("delete", "subsite", NAME, "--ignore-not-found", "--wait=true", timeout=60)
    wait_for(lambda: _gone(kubectl, "namespace", f"kameng-{NAME}"), 120, "old namespace gone")
    kubectl("delete", "secret", f"kameng-keys-{NAME}", "-n", "kameng-system",
            "--ignore-not-found")
    drop_leftovers(pg_admin_dsn, devenv["redis_url"])
    docs = sample_objects(NAME, RP)
    docs[2]["spec"]["database"] = {"reclaimPolicy": "Delete"}
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cfg = OperatorConfig(pg_admin_dsn=devenv["pg_admin_dsn"], redis_url=devenv["redis_url"],
                         kubeconfig=devenv["kubeconfig"], metrics_port=0)
    rt = await create_runtime(cfg)
    try:
        before = get(kubectl, "subsite", NAME)  # a snapshot taken before the deletion
        await reconcile.reconcile(rt, before, None, None)
        assert db_exists(pg_admin_dsn)
        assert not _gone(kubectl, "namespace", f"kameng-{NAME}")

        # A reconcile in flight (holding its snapshot) while the deletion starts: the
        # reclaim waits for it, then removes everything.
        in_flight = asyncio.create_task(reconcile.reconcile(rt, before, None, None))
        await asyncio.sleep(0)
        deleting = json.loads(json.dumps(before))
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        await deletion.reclaim(rt, deleting, 0)
        await in_flight
        assert not db_exists(pg_admin_dsn)

        # Late wake-ups after the reclaim, with the old snapshot and with the new one.
        await reconcile.reconcile(rt, before, None, None)
        await reconcile.reconcile(rt, deleting, None, None)
        assert not db_exists(pg_admin_dsn), "a reconcile re-created the reclaimed database"
        assert not redis.Redis.from_url(devenv["redis_url"]).acl_getuser(
            f"kameng-site-{NAME}"), "a reconcile re-created the reclaimed Redis user"
        ns = get(kubectl, "namespace", f"kameng-{NAME}") \
            if not _gone(kubectl, "namespace", f"kameng-{NAME}") else None
        assert ns is None or ns["metadata"].get("deletionTimestamp"), \
            "a reconcile re-created the reclaimed namespace"
    finally:
        await rt.kube.close()
        await rt.redis.close()
        kubectl("delete", "subsite", NAME, "--ignore-not-found", "--wait=false")
        kubectl("delete", "license", NAME, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
        kubectl("delete", "namespace", f"kameng-{NAME}", "--ignore-not-found", "--wait=false")
        kubectl("delete", "secret", f"kameng-keys-{NAME}", "-n", "kameng-system",
                "--ignore-not-found")
        drop_leftovers(pg_admin_dsn, devenv["redis_url"])
