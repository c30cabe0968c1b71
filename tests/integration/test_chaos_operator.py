"""Chaos: the operator SIGKILLed 50 times at random moments while 200 SubSites roll out.

Every kill lands in the middle of real work (provisioning databases, roles and Redis
users, applying children, writing status); each restart must pick the work up from what
the cluster, PostgreSQL and Redis hold. At the end: all 200 Ready at their generation,
exactly one of each child per site (one ReplicaSet: no key or password was regenerated
by a restart, which would roll the Deployment again), one database, one role and one
Redis user per site and none besides; then all 200 deleted, and nothing of them left
anywhere: no database, role, Redis user, owner record or namespace. Figures printed.

The killed operator's Lease would keep its successor waiting up to 15 s (it cannot know
the holder died); the test knows, and removes it, so 50 restarts take minutes, not a
quarter of an hour. Handover on a real death is test_operator_peering's.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from kameng.api.kinds import CHILDREN
from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.build import build_children
from kameng.children.context import MANAGED_BY, SiteContext, SiteSecrets
from kameng.provision.names import REDIS_OWNERS_KEY, pg_identifier, redis_user
from tests.support.operator import OperatorProcess, batch_objects
from tests.support.wait import budget

pytestmark = pytest.mark.chaos

PREFIX = "it-chaos"
COUNT = 200
KILLS = 50
NS_PREFIX = f"kameng-{PREFIX}-"


def _names() -> list[str]:
    return [f"{PREFIX}-{i:04d}" for i in range(COUNT)]


def _subsites(kubectl: Any) -> list[dict[str, Any]]:
    items = json.loads(kubectl("get", "subsites", "-o", "json").stdout)["items"]
    return [o for o in items if o["metadata"]["name"].startswith(PREFIX + "-")]


def _ready(kubectl: Any) -> int:
    return sum(1 for o in _subsites(kubectl)
               if (o.get("status") or {}).get("phase") == "Ready"
               and (o.get("status") or {}).get("observedGeneration")
               == o["metadata"]["generation"])


def _expected_children(docs: list[dict[str, Any]]) -> Counter[str]:
    """What one site's namespace holds: the builders' own list (the Namespace aside)."""
    ss = docs[2]
    ctx = SiteContext(name=ss["metadata"]["name"], uid="u",
                      spec=SubSiteSpec.model_validate(ss["spec"]),
                      role_policy=RolePolicySpec.model_validate(docs[0]["spec"]),
                      secrets=SiteSecrets())
    return Counter(o["kind"] for o in build_children(ctx) if o["kind"] != "Namespace")


def _children(kubectl: Any, kinds: str, selector: tuple[str, ...] = ()
              ) -> Counter[tuple[str, str]]:
    """(namespace, kind) → count, over the batch's namespaces."""
    items = json.loads(kubectl("get", kinds, "-A", *selector, "-o", "json",
                               timeout=180).stdout)["items"]
    return Counter((o["metadata"]["namespace"], o["kind"]) for o in items
                   if o["metadata"]["namespace"].startswith(NS_PREFIX))


def _backends(pg_admin_dsn: str, redis_url: str) -> tuple[set[str], set[str], set[str],
                                                             set[str]]:
    """The batch's databases, roles, Redis users and owner records."""
    like = pg_identifier(PREFIX + "-") + "%"
    with psycopg.connect(pg_admin_dsn) as conn:
        dbs = {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)).fetchall()}
        roles = {r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (like,)).fetchall()}
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    users = {u for u in r.acl_users() if u.startswith(redis_user(PREFIX + "-"))}
    owners = {u for u in r.hkeys(REDIS_OWNERS_KEY) if u.startswith(redis_user(PREFIX + "-"))}
    r.close()
    return dbs, roles, users, owners


def _restart(coords: tuple[str, str, str], log: Path, kubectl: Any,
             op: OperatorProcess) -> OperatorProcess:
    op.kill()
    kubectl("delete", "lease", "kameng-operator", "-n", op.namespace, "--ignore-not-found")
    return OperatorProcess(*coords, log).start()


def test_fifty_sigkills_during_a_200_site_rollout_converge_without_orphans(
        devenv: dict[str, str], kubectl: Any, tmp_path: Path) -> None:
    rnd = random.Random(50)
    coords = (devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"])
    names = _names()
    docs = batch_objects(PREFIX, COUNT)
    op = OperatorProcess(*coords, tmp_path / "op-00.log").start()
    t0 = time.monotonic()
    try:
        # The roll-out in waves, one per kill, as a GitOps sync of many sites lands: every
        # kill falls while sites are new (their databases, users and children half made)
        # and while earlier ones are still converging.
        wave = -(-COUNT // KILLS)
        kubectl("apply", "-f", "-", input=yaml.safe_dump(docs[0]))
        ready_at_kill = []
        for k in range(1, KILLS + 1):
            kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
                docs[1 + 2 * wave * (k - 1):1 + 2 * wave * k]))
            # A random moment of real work: the operator has been up 0.2-1.5 s (its
            # start alone lists every SubSite and child and begins reconciling).
            time.sleep(rnd.uniform(0.2, 1.5))
            ready_at_kill.append(_ready(kubectl) if k % 10 == 0 else -1)
            op = _restart(coords, tmp_path / f"op-{k:02d}.log", kubectl, op)
        killed_at = time.monotonic() - t0
        deadline = time.monotonic() + budget(600)
        while (n := _ready(kubectl)) < COUNT:
            assert time.monotonic() < deadline, f"{n}/{COUNT} Ready; {op.log_tail(40)}"
            time.sleep(2)
        converged_at = time.monotonic() - t0
        print(f"{KILLS} SIGKILLs over {killed_at:.0f} s, {wave} new sites before each "
              f"(Ready at every 10th kill: {[n for n in ready_at_kill if n >= 0]}); all "
              f"{COUNT} Ready {converged_at - killed_at:.0f} s after the last kill")

        # Exactly the children of the design per site, each once; one ReplicaSet (no
        # second rollout: no key or password regenerated by a restart).
        want = _expected_children(docs)
        kids = _children(kubectl, ",".join(sorted({r.plural for r in CHILDREN
                                                   if r.kind != "Namespace"})),
                         ("-l", f"app.kubernetes.io/managed-by={MANAGED_BY}"))
        rs = _children(kubectl, "replicasets")
        wrong = {}
        for name in names:
            ns = f"kameng-{name}"
            got = Counter({kind: kids[(ns, kind)] for kind in want})
            if got != want or rs[(ns, "ReplicaSet")] != 1:
                wrong[name] = (dict(got), rs[(ns, "ReplicaSet")])
        assert wrong == {}, list(wrong.items())[:5]
        dbs, roles, users, owners = _backends(devenv["pg_admin_dsn"], devenv["redis_url"])
        want_pg = {pg_identifier(n) for n in names}
        want_users = {redis_user(n) for n in names}
        assert (dbs, roles) == (want_pg, want_pg)
        assert (users, owners) == (want_users, want_users)
    finally:
        if not op.running():
            op = OperatorProcess(*coords, tmp_path / "cleanup.log").start()
        t1 = time.monotonic()
        kubectl("delete", "subsite", *names, "--ignore-not-found", "--wait=true",
                "--timeout=600s", timeout=660)
        deleted_in = time.monotonic() - t1
        op.stop()
        kubectl("delete", "license", *names, "--ignore-not-found", timeout=300)
        kubectl("delete", "rolepolicy", f"{PREFIX}-rp", "--ignore-not-found")
    print(f"{COUNT} SubSites deleted (exit archive, reclaim) in {deleted_in:.0f} s")
    # Nothing of them is left anywhere.
    assert _backends(devenv["pg_admin_dsn"], devenv["redis_url"]) == (set(), set(), set(),
                                                                      set())
