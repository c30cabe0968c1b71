"""The shipped ClusterRole is enough: the operator, running as its ServiceAccount with
only the RBAC of manifests/operator/kameng.yaml (rendered from the Helm chart),
provisions a SubSite and reclaims it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.operator import OperatorProcess

from .test_operator_lifecycle import fresh_start, get, sample_objects, wait_for

ROOT = Path(__file__).resolve().parents[2]
SITE, RP = "it-rbac", "it-rbac-rp"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def sa_kubeconfig(kubectl: Any, admin_kubeconfig: str, path: Path,
                  account: str = "kameng-operator") -> str:
    token = kubectl("create", "token", account, "-n", "kameng-system",
                    "--duration=1h").stdout.strip()
    cfg = json.loads(Path(admin_kubeconfig).read_text()) \
        if admin_kubeconfig.endswith(".json") else yaml.safe_load(Path(admin_kubeconfig)
                                                                  .read_text())
    cfg["users"] = [{"name": account, "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = account
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_operator_runs_with_its_least_privilege_role(devenv: dict[str, str], kubectl: Any,
                                                     tmp_path: Path) -> None:
    rendered = yaml.safe_load_all((ROOT / "manifests" / "operator" / "kameng.yaml").read_text())
    rbac = [d for d in rendered if d and d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in rbac} == RBAC_KINDS
    kubectl("apply", "-f", str(ROOT / "manifests" / "operator" / "namespace.yaml"))
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    kubeconfig = sa_kubeconfig(kubectl, devenv["kubeconfig"], tmp_path / "sa.kubeconfig")
    # Sanity: the identity really is the ServiceAccount, not the admin.
    who = kubectl("--kubeconfig", kubeconfig, "auth", "can-i", "create", "clusterroles",
                  check=False)
    assert who.stdout.strip() == "no"
    op = OperatorProcess(kubeconfig, devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path / "operator.log").start()
    try:
        fresh_start(kubectl, SITE)
        docs = sample_objects(SITE, RP)
        docs[2]["spec"]["database"] = {"reclaimPolicy": "Delete"}
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        kubectl.wait_ready(f"subsite/{SITE}", 20)
        # The member Role could only be created because the operator holds its rights.
        get(kubectl, "role", "member-li-wei", "-n", f"kameng-{SITE}")
        kubectl("delete", "subsite", SITE, "--wait=true", "--timeout=30s", timeout=60)
        wait_for(lambda: kubectl("get", "namespace", f"kameng-{SITE}",
                                 check=False).returncode != 0, 30, "namespace deleted")
        log = (tmp_path / "operator.log").read_text()
        assert "403" not in log, log[-3000:]
    finally:
        op.stop()
        kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=false")
        kubectl("delete", "license", SITE, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
        # The cluster-scoped RBAC applied above, so a later chart install (or the next run
        # on this cluster) does not meet objects it cannot adopt.
        kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                input=yaml.safe_dump_all([d for d in rbac if d["kind"].startswith("Cluster")]))
