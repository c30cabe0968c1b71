"""Approvals end to end on the dev environment: a partner's staff ask for changes in their
back office (a shop run from what a real operator provisioned); HQ (reading the real
site-credential registry) queues those the site's RolePolicy lists and applies the others
at once; an approved change reaches the SubSite and the shop's config, a rejected one
never does; HQ decides in its back office and with `kubectl kameng approvals|approve|
reject`; every request keeps who, what, when and the decision."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kameng.api.common import API_VERSION
from kameng.api.permissions import PERMISSIONS, STANDARD_ROLES
from kameng.contracts import invitation, pod
from kameng.contracts.hq_auth import REGISTRY_SECRET
from kameng.contracts.license_token import generate_signing_key, public_key_to_b64
from kameng.kube.events import EVENT_NAMESPACE
from tests.integration.test_onboarding import hq_kubeconfig, remove_hq_identity
from tests.integration.test_operator_lifecycle import get
from tests.support.operator import OperatorProcess
from tests.support.storefront import (
    DEFAULT_PASSWORD,
    HQ_ADMIN,
    csrf_from,
    mount_secret,
    redeem_invitation,
    run_hq,
    run_site_from_cluster,
    staff_client,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SITE = f"it-appr-{secrets.token_hex(3)}"
RP = f"{SITE}-rp"
OWNER = "boss@appr.example"
ADMIN_TOKEN = secrets.token_urlsafe(24)
PLUGIN = str(Path(sys.executable).parent / "kubectl-kameng")


def objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": API_VERSION, "kind": "RolePolicy", "metadata": {"name": RP},
         "spec": {"roles": [{"name": "site-admin", "permissions": list(STANDARD_ROLES[
             "site-admin"])}, {"name": "owner", "permissions": list(PERMISSIONS)}],
                  "approvals": ["payments.methods", "domain"]}},
        {"apiVersion": API_VERSION, "kind": "License", "metadata": {"name": SITE},
         "spec": {"subSite": SITE, "plan": "basic", "categories": ["game-cards"],
                  "term": {"start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"},
                  "fees": {"revenueShare": [{"category": "game-cards", "percent": "5"}]}}},
        {"apiVersion": API_VERSION, "kind": "SubSite", "metadata": {"name": SITE},
         "spec": {"displayName": "Approvals", "owner": {"name": "Boss", "email": OWNER},
                  "licenseRef": SITE, "rolePolicyRef": RP, "domain": f"{SITE}.shop.example",
                  "members": [{"name": "boss", "email": OWNER, "role": "owner"}],
                  "database": {"reclaimPolicy": "Delete"}}},
    ]


@pytest.fixture(scope="module")
def world(devenv: dict[str, str], kubectl: Any, pg_admin_dsn: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("appr")
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp / "operator.log").start()
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects()))
    kubectl("wait", "--for=condition=Ready", f"subsite/{SITE}", "--timeout=90s", timeout=120)
    creds = tmp / "registry"

    def sync_registry() -> None:  # as the kubelet keeps HQ's Secret volume
        mount_secret(get(kubectl, "secret", REGISTRY_SECRET, "-n", "kameng-system"), creds)

    sync_registry()
    # HQ as its own ServiceAccount, with only the chart's roles.
    identity = hq_kubeconfig(kubectl, devenv["kubeconfig"], tmp / "hq.kubeconfig")
    try:
        with run_hq(pg_admin_dsn, redis_url, public_key_to_b64(generate_signing_key()), creds,
                    overrides={"kubeconfig": identity,
                               "admin_api_token": ADMIN_TOKEN}) as (hq_url, _), \
                run_site_from_cluster(kubectl, SITE, hq_url, tmp / "shop") as shop_url:
            keys = get(kubectl, "secret", pod.site_keys_copy(SITE), "-n", "kameng-system")
            session = base64.b64decode(keys["data"][pod.SESSION_SECRET.key]).decode()
            owner = redeem_invitation(shop_url, invitation.issue(session, SITE, "boss", OWNER),
                                      DEFAULT_PASSWORD)
            hq = staff_client(hq_url, HQ_ADMIN, DEFAULT_PASSWORD,
                              replace_bootstrap_with="approvals-reviewer-1")
            yield {"hq_url": hq_url, "shop_url": shop_url, "owner": owner, "hq": hq,
                   "kubeconfig": devenv["kubeconfig"]}
    finally:
        kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=true",
                "--timeout=90s", timeout=120, check=False)
        kubectl("delete", "license", SITE, "--ignore-not-found", check=False)
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found", check=False)
        remove_hq_identity(kubectl)
        op.stop()


def ask(owner: httpx.Client, segment: str, data: dict[str, Any]) -> None:
    page = owner.get("/admin/requests")
    assert page.status_code == 200, page.text[:500]
    key = secrets.token_hex(8)
    r = owner.post(f"/admin/requests/{segment}",
                   data={"csrf": csrf_from(page.text), "request_key": key, **data})
    assert r.status_code == 303
    assert r.headers["location"].endswith("msg=request_sent"), r.headers["location"]


def requests_seen_by_shop(owner: httpx.Client) -> list[tuple[str, str, str]]:
    page = owner.get("/admin/requests").text
    return re.findall(r'data-id="(R[0-9a-f]+)" data-kind="([^"]+)" data-status="([a-z]+)"',
                      page)


def spec(kubectl: Any) -> dict[str, Any]:
    return dict(get(kubectl, "subsite", SITE)["spec"])


def shop_config(kubectl: Any) -> dict[str, Any]:
    cm = get(kubectl, "configmap", pod.CONFIGMAP_NAME, "-n", f"kameng-{SITE}")
    return dict(json.loads(cm["data"][pod.CONFIGMAP_KEY]))


def plugin(world: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": world["kubeconfig"],
           "KAMENG_HQ_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run([PLUGIN, *args, "--hq-url", world["hq_url"]], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def test_listed_change_waits_for_approval_then_takes_effect(world: dict[str, Any],
                                                            kubectl: Any) -> None:
    owner, hq = world["owner"], world["hq"]
    assert shop_config(kubectl)["approvals"] == ["payments.methods", "domain"]
    ask(owner, "payments", {"methods": ["sandbox", "alipay"], "note": "customers ask"})
    rid, kind, status = requests_seen_by_shop(owner)[0]
    assert (kind, status) == ("payments.methods", "pending")
    time.sleep(2)  # nothing changes while it waits
    assert spec(kubectl)["payments"]["methods"] == ["sandbox"]
    assert shop_config(kubectl)["payments"]["methods"] == ["sandbox"]

    page = hq.get(f"/admin/approvals?id={rid}")
    assert 'data-status="pending"' in page.text
    assert "customers ask" in page.text
    r = hq.post(f"/admin/approvals/{rid}/approve",
                data={"csrf": csrf_from(page.text), "reason": "channel contract signed"})
    assert r.headers["location"].endswith("msg=applied"), r.headers["location"]
    ss = get(kubectl, "subsite", SITE)
    assert ss["spec"]["payments"]["methods"] == ["sandbox", "alipay"]
    assert ss["metadata"]["annotations"]["kameng.io/approved-change"] == rid
    wait_for(lambda: shop_config(kubectl)["payments"]["methods"] == ["sandbox", "alipay"],
             timeout=30)
    assert (rid, "payments.methods", "applied") in requests_seen_by_shop(owner)
    trail = hq.get(f"/admin/approvals?id={rid}").text
    for action in ("requested", "approved", "applied"):
        assert f"<td>{action}</td>" in trail


def test_rejected_change_never_takes_effect(world: dict[str, Any], kubectl: Any) -> None:
    owner = world["owner"]
    before = spec(kubectl)["domain"]
    ask(owner, "domain", {"domain": "stolen.example.com"})
    rid = next(r for r, k, s in requests_seen_by_shop(owner) if k == "domain" and
               s == "pending")
    listed = plugin(world, "approvals", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    pending = {r["id"]: r for r in json.loads(listed.stdout)["requests"]}
    assert pending[rid]["change"] == {"domain": "stolen.example.com"}
    assert pending[rid]["requested_by"] == OWNER
    refused = plugin(world, "reject", rid)
    assert refused.returncode == 1
    assert "--reason" in refused.stderr
    out = plugin(world, "reject", rid, "--reason", "domain not verified", "--as-name", "ops")
    assert out.returncode == 0, out.stderr
    assert "rejected" in out.stdout
    # A decision is final: approving it afterwards is refused and changes nothing.
    late = plugin(world, "approve", rid)
    assert late.returncode == 1
    assert "not_pending" in late.stderr
    time.sleep(2)
    assert spec(kubectl)["domain"] == before
    everything = json.loads(plugin(world, "approvals", "--all", "-o", "json").stdout)
    row = next(r for r in everything["requests"] if r["id"] == rid)
    assert row["status"] == "rejected"
    assert row["decided_by"] == "kubectl:ops"
    assert row["decision_reason"] == "domain not verified"
    assert row["decided_at"]
    assert row["requested_at"]


def test_unlisted_change_applies_at_once_and_bad_ones_are_refused(
        world: dict[str, Any], kubectl: Any) -> None:
    owner = world["owner"]
    ask(owner, "price-rules", {"price_rules": "game-cards=12.5"})
    rows = requests_seen_by_shop(owner)
    assert next(s for _, k, s in rows if k == "catalog.priceRules") == "applied"
    assert spec(kubectl)["catalog"]["priceRules"] == [
        {"category": "game-cards", "markupPercent": "12.5"}]
    # A value the SubSite cannot hold is refused when asked for, never queued.
    page = owner.get("/admin/requests")
    r = owner.post("/admin/requests/payments", data={
        "csrf": csrf_from(page.text), "request_key": secrets.token_hex(8),
        "methods": ["bitcoin"]})
    assert r.headers["location"].endswith("msg=request_refused")
    # The admin API wants HQ's admin token.
    bad = httpx.get(world["hq_url"] + "/api/v1/admin/approvals",
                    headers={"X-Kameng-Admin-Token": "guess"})
    assert bad.status_code == 401


def test_yaml_edit_of_approvable_field_is_recorded_not_blocked(
        world: dict[str, Any], kubectl: Any) -> None:
    kubectl("patch", "subsite", SITE, "--type", "merge", "-p",
            json.dumps({"spec": {"payments": {"methods": ["sandbox", "wechatpay"]}}}))
    # Not blocked: HQ owns the YAML, so the change takes effect...
    wait_for(lambda: shop_config(kubectl)["payments"]["methods"] == ["sandbox", "wechatpay"],
             timeout=30)

    def recorded() -> dict[str, Any] | None:
        history = (get(kubectl, "subsite", SITE).get("status") or {}).get("changeHistory")
        last = (history or [{}])[-1]
        return last if last.get("source") == "yaml" else None

    # ...and recorded, apart from the approved ones before it.
    last = wait_for(recorded, timeout=30)
    assert last["fields"] == ["payments.methods"]
    history = get(kubectl, "subsite", SITE)["status"]["changeHistory"]
    assert any(h["source"] == "approval" and h["fields"] == ["payments.methods"]
               and h["request"].startswith("R") for h in history)
    events = get(kubectl, "events", "-n", EVENT_NAMESPACE, "--field-selector",
                 f"involvedObject.name={SITE},reason=ChangedOutsideApproval")
    assert any(e["type"] == "Warning" and "payments.methods" in e["message"]
               for e in events["items"]), events["items"]
