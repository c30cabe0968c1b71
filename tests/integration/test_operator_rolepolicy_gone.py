"""A SubSite whose RolePolicy disappears (deleted, or not yet seen by a restarted
operator) keeps the roles it was given: the operator reports the problem and never rolls
out a config that strips every member of every permission."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.support.operator import OperatorProcess
from tests.support.wait import wait_for as poll

from .test_operator_lifecycle import fresh_start, get, sample_objects

SITE = "it-rpgone"
RP = "it-rpgone-rp"


def _roles(kubectl: Any) -> dict[str, Any]:
    cm = get(kubectl, "configmap", "storefront-config", "-n", f"kameng-{SITE}")
    return json.loads(cm["data"]["site.json"])["roles"]


def test_missing_rolepolicy_keeps_the_applied_roles(devenv: dict[str, str], kubectl: Any,
                                                   tmp_path: Any) -> None:
    lic, rp, ss = sample_objects(SITE, RP)
    ss["spec"]["database"] = {"reclaimPolicy": "Delete"}
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path / "op.log").start()
    try:
        fresh_start(kubectl, SITE)
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([lic, rp, ss]))
        kubectl("wait", "--for=condition=Ready", f"subsite/{SITE}", "--timeout=60s",
                timeout=90)
        roles = _roles(kubectl)
        assert roles, "the site config carries the RolePolicy's roles"
        dep = get(kubectl, "deployment", "storefront", "-n", f"kameng-{SITE}")
        kubectl("delete", "rolepolicy", RP)
        poll(lambda: (get(kubectl, "subsite", SITE).get("status") or {}).get("phase")
             == "Failed", timeout=60, what="the missing RolePolicy reported")
        ready = next(c for c in get(kubectl, "subsite", SITE)["status"]["conditions"]
                     if c["type"] == "Ready")
        assert ready["reason"] == "RolePolicyNotFound"
        assert RP in ready["message"]
        assert _roles(kubectl) == roles, "the roles were stripped"
        after = get(kubectl, "deployment", "storefront", "-n", f"kameng-{SITE}")
        assert after["metadata"]["generation"] == dep["metadata"]["generation"]
        # The RolePolicy returns: the site is Ready again with the same roles.
        kubectl("apply", "-f", "-", input=yaml.safe_dump(rp))
        kubectl("wait", "--for=condition=Ready", f"subsite/{SITE}", "--timeout=60s",
                timeout=90)
        assert _roles(kubectl) == roles
    finally:
        kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=true",
                "--timeout=60s", timeout=90)
        op.stop()
        kubectl("delete", "license", SITE, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
