"""Operator end to end on the dev environment: a SubSite becomes a running, isolated
storefront; changes converge; drift is undone; an idle operator writes nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from kameng.contracts.license_token import verify_token
from kameng.contracts.siteconfig import SiteConfig
from tests.support.operator import OperatorProcess
from tests.support.wait import budget, wait_until_quiet
from tests.support.wait import wait_for as _wait_for

ROOT = Path(__file__).resolve().parents[2]
SITE, OTHER, RP = "it-life", "it-life-b", "it-life-rp"


def wait_for(pred: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """The operator tests' call signature over the one poller in tests/support/wait.py."""
    return _wait_for(pred, timeout=timeout, what=what)


def sample_objects(site: str, rp: str, license_: bool = True) -> list[dict[str, Any]]:
    """The shipped samples, renamed for this test."""
    docs = {}
    for f in ("license-demo.yaml", "subsite-demo.yaml"):
        doc = yaml.safe_load((ROOT / "manifests" / "samples" / f).read_text())
        docs[doc["kind"]] = doc
    docs["RolePolicy"] = yaml.safe_load(
        (ROOT / "manifests" / "samples" / "rolepolicy-standard.yaml").read_text())
    docs["License"]["metadata"]["name"] = site
    docs["License"]["spec"]["subSite"] = site
    docs["SubSite"]["metadata"]["name"] = site
    docs["SubSite"]["spec"].update(licenseRef=site, rolePolicyRef=rp,
                                   domain=f"{site}.shop.example")
    docs["RolePolicy"]["metadata"]["name"] = rp
    out = [docs["RolePolicy"], docs["SubSite"]]
    return [docs["License"], *out] if license_ else out


def fresh_start(kubectl: Any, *names: str) -> None:
    """Leftovers of an interrupted earlier run (a SubSite, a still-terminating namespace)
    are cleared first, so a test measures the operator, not the previous run. Needs an
    operator running: SubSites carry its finalizer."""
    for name in names:
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true",
                "--timeout=60s", timeout=90)
    for name in names:
        wait_for(lambda n=name: kubectl("get", "namespace", f"kameng-{n}",
                                        check=False).returncode != 0,
                 120, f"namespace kameng-{name} gone")


def get(kubectl: Any, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def secret_value(kubectl: Any, ns: str, name: str, key: str) -> str:
    return base64.b64decode(get(kubectl, "secret", name, "-n", ns)["data"][key]).decode()


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    yield op
    for name in (SITE, OTHER):
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true", timeout=60)
    kubectl("delete", "license", SITE, OTHER, "--ignore-not-found")
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
    op.stop()


@pytest.fixture(scope="module")
def sites(operator: OperatorProcess, kubectl: Any) -> dict[str, float]:
    """Both sites applied; returns seconds until each was Ready."""
    took = {}
    fresh_start(kubectl, SITE, OTHER)
    for name in (SITE, OTHER):
        docs = sample_objects(name, RP)
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        kubectl.wait_ready(f"subsite/{name}", 10)
        took[name] = time.monotonic() - started
    return took


def test_samples_become_ready_within_10s(sites: dict[str, float], kubectl: Any) -> None:
    assert max(sites.values()) < budget(10)
    ss = get(kubectl, "subsite", SITE)
    st = ss["status"]
    assert st["phase"] == "Ready"
    assert st["namespace"] == f"kameng-{SITE}"
    assert st["url"] == f"http://{SITE}.shop.example"
    assert st["licenseState"] == "Active"
    assert st["readyReplicas"] == 2
    assert st["observedGeneration"] == ss["metadata"]["generation"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Ready": "True", "Reconciling": "False", "Stalled": "False",
                     "LicenseValid": "True", "DatabaseReady": "True",
                     "StorefrontAvailable": "True"}
    dep = get(kubectl, "deployment", "storefront", "-n", f"kameng-{SITE}")
    available = {c["type"]: c["status"] for c in dep["status"]["conditions"]}
    assert available["Available"] == "True"
    pods = get(kubectl, "pods", "-n", f"kameng-{SITE}")["items"]
    assert {p["spec"]["nodeName"].startswith("kwok-") for p in pods} == {True}


def test_no_kopf_bookkeeping_outside_kameng_io(sites: dict[str, float], kubectl: Any) -> None:
    ss = get(kubectl, "subsite", SITE)
    keys = list(ss["metadata"].get("annotations", {})) + ss["metadata"].get("finalizers", [])
    assert not [k for k in keys if "kopf.zalando.org" in k]
    assert "kopf" not in ss.get("status", {})
    assert ss["metadata"]["finalizers"] == ["kameng.io/reclaim"]


def test_children_exist_with_security_settings(sites: dict[str, float], kubectl: Any) -> None:
    ns_name = f"kameng-{SITE}"
    ns = get(kubectl, "namespace", ns_name)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["metadata"]["ownerReferences"][0]["kind"] == "SubSite"
    for kind, name in [("resourcequota", "storefront-quota"), ("limitrange", "storefront-limits"),
                       ("networkpolicy", "default-deny"), ("networkpolicy", "storefront"),
                       ("service", "storefront"), ("ingress", "storefront"),
                       ("poddisruptionbudget", "storefront"), ("configmap", "storefront-config"),
                       ("role", "member-li-wei"), ("rolebinding", "member-li-wei"),
                       ("secret", "storefront-db"), ("secret", "storefront-redis"),
                       ("secret", "storefront-keys"), ("secret", "license")]:
        obj = get(kubectl, kind, name, "-n", ns_name)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kameng"
    # finance has no Kubernetes access in the standard policy: no Role for zhang-min.
    roles = [r["metadata"]["name"] for r in get(kubectl, "roles", "-n", ns_name)["items"]]
    assert roles == ["member-li-wei"]
    sa = get(kubectl, "serviceaccount", "storefront", "-n", ns_name)
    assert sa["automountServiceAccountToken"] is False
    pod_spec = get(kubectl, "deployment", "storefront", "-n", ns_name)["spec"]["template"]["spec"]
    c = pod_spec["containers"][0]["securityContext"]
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"]["drop"] == ["ALL"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    cfg = SiteConfig.from_json(get(kubectl, "configmap", "storefront-config", "-n", ns_name)
                               ["data"]["site.json"])
    assert cfg.site == SITE
    assert cfg.mode == "normal"
    assert "finance:withdraw" in cfg.permissions_for("finance")
    hq = get(kubectl, "secret", "kameng-hq-keys", "-n", "kameng-system")
    pub = base64.b64decode(hq["data"]["public-key"]).decode()
    assert cfg.hq_public_key == pub
    claims = verify_token(secret_value(kubectl, ns_name, "license", "token"), pub)
    assert (claims.site, claims.plan) == (SITE, "basic")


def test_credentials_stay_out_of_status_and_events(sites: dict[str, float],
                                                   kubectl: Any) -> None:
    dsn = secret_value(kubectl, f"kameng-{SITE}", "storefront-db", "dsn")
    password = dsn.split(":")[2].split("@")[0]
    text = kubectl("get", "subsite", SITE, "-o", "yaml").stdout
    text += kubectl("get", "events", "-n", "default", "-o", "yaml").stdout
    assert password not in text


def test_database_isolation(sites: dict[str, float], kubectl: Any) -> None:
    own = secret_value(kubectl, f"kameng-{SITE}", "storefront-db", "dsn")
    other = secret_value(kubectl, f"kameng-{OTHER}", "storefront-db", "dsn")
    with psycopg.connect(own, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        assert conn.execute("SELECT current_user").fetchone() == ("kameng_it_life",)
    own_db_other_host = other.rsplit("/", 1)[0] + "/kameng_it_life"
    with pytest.raises(psycopg.OperationalError, match=r"permission denied|CONNECT"):
        psycopg.connect(own_db_other_host, connect_timeout=5)


def test_redis_isolation(sites: dict[str, float], kubectl: Any, redis_url: str) -> None:
    url = secret_value(kubectl, f"kameng-{SITE}", "storefront-redis", "url")
    r = redis.Redis.from_url(url)
    try:
        _isolated(r)
    finally:
        # A malformed order event left in the real orders stream would be read by every
        # later worker on the default prefix (the demo's settlement and risk workers).
        admin = redis.Redis.from_url(redis_url)
        admin.delete(f"kameng:orders:{SITE}", f"site:{SITE}:k")
        admin.close()


def _isolated(r: redis.Redis) -> None:
    assert r.xadd(f"kameng:orders:{SITE}", {"v": "1"})
    r.set(f"site:{SITE}:k", "v")
    r.xrange(f"kameng:decisions:{SITE}")
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.xadd(f"kameng:orders:{OTHER}", {"v": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.get(f"site:{OTHER}:k")
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.xadd(f"kameng:decisions:{SITE}", {"forged": "1"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.flushall()


def test_idle_operator_makes_no_writes(sites: dict[str, float], operator: OperatorProcess
                                       ) -> None:
    # Converged means quiet: no API write for 10 s. Settling after the last watch events
    # may take a while on a loaded machine (waited for, up to a minute); an operator that
    # keeps writing (e.g. status or children every resync) never gets a quiet window.
    wait_until_quiet(operator.api_writes, quiet_for=10, timeout=60, what="operator API writes")


def test_spec_change_reaches_children_and_rolls(sites: dict[str, float],
                                                kubectl: Any) -> None:
    ns = f"kameng-{SITE}"
    old_rs = get(kubectl, "deployment", "storefront", "-n", ns)["spec"]["template"]
    patch = {"spec": {"domain": f"new-{SITE}.shop.example", "storefront": {"replicas": 3},
                      "branding": {"title": "新标题"},
                      "catalog": {"priceRules": [{"category": "game-cards",
                                                  "markupPercent": "20"}]}}}
    kubectl("patch", "subsite", SITE, "--type=merge", "-p", json.dumps(patch))

    def converged() -> bool:
        ing = get(kubectl, "ingress", "storefront", "-n", ns)
        dep = get(kubectl, "deployment", "storefront", "-n", ns)
        cfg = SiteConfig.from_json(get(kubectl, "configmap", "storefront-config", "-n", ns)
                                   ["data"]["site.json"])
        return (ing["spec"]["rules"][0]["host"] == f"new-{SITE}.shop.example"
                and dep["spec"]["replicas"] == 3 and cfg.branding.title == "新标题"
                and str(cfg.markup_for("game-cards")) == "20")

    wait_for(converged, 10, "spec change in children")
    tmpl = get(kubectl, "deployment", "storefront", "-n", ns)["spec"]["template"]
    key = "kameng.io/config-checksum"
    assert tmpl["metadata"]["annotations"][key] != old_rs["metadata"]["annotations"][key]
    env = {e["name"]: e.get("value") for e in tmpl["spec"]["containers"][0]["env"]}
    assert env["KAMENG_PUBLIC_URL"] == f"http://new-{SITE}.shop.example"
    kubectl.wait_ready(f"subsite/{SITE}", 15)
    ss = get(kubectl, "subsite", SITE)
    assert ss["status"]["url"] == f"http://new-{SITE}.shop.example"
    assert ss["status"]["readyReplicas"] == 3


def test_deleted_and_edited_children_are_restored(sites: dict[str, float],
                                                  kubectl: Any) -> None:
    ns = f"kameng-{OTHER}"
    cm_before = get(kubectl, "configmap", "storefront-config", "-n", ns)["data"]
    kubectl("delete", "configmap", "storefront-config", "-n", ns)
    kubectl("delete", "networkpolicy", "default-deny", "-n", ns)
    kubectl("scale", "deployment", "storefront", "-n", ns, "--replicas=5")
    kubectl("patch", "configmap", "storefront-config", "-n", ns, "--type=merge", "-p",
            '{"data": {"site.json": "{}"}}', check=False)

    def restored() -> bool:
        cm = get(kubectl, "configmap", "storefront-config", "-n", ns)
        dep = get(kubectl, "deployment", "storefront", "-n", ns)
        kubectl("get", "networkpolicy", "default-deny", "-n", ns)
        return cm["data"] == cm_before and dep["spec"]["replicas"] == 2

    wait_for(restored, 5, "children restored")
    # Keys are generated once: restoring a deleted keys Secret never rotates them.
    key = secret_value(kubectl, ns, "storefront-keys", "data-key")
    kubectl("delete", "secret", "storefront-keys", "license", "-n", ns)
    wait_for(lambda: kubectl("get", "secret", "storefront-keys", "license", "-n", ns,
                             check=False).returncode == 0, 5, "secrets restored")
    assert secret_value(kubectl, ns, "storefront-keys", "data-key") == key


def test_rolepolicy_change_updates_every_site_using_it(sites: dict[str, float],
                                                       kubectl: Any) -> None:
    rp = get(kubectl, "rolepolicy", RP)
    roles = rp["spec"]["roles"]
    for r in roles:
        if r["name"] == "site-admin":
            r["kubernetes"] = {"access": "none"}
        if r["name"] == "operations":
            r["permissions"] = ["catalog:read"]
    kubectl("patch", "rolepolicy", RP, "--type=merge", "-p",
            json.dumps({"spec": {"roles": roles}}))

    def updated(ns: str) -> bool:
        cfg = SiteConfig.from_json(get(kubectl, "configmap", "storefront-config", "-n", ns)
                                   ["data"]["site.json"])
        no_roles = not get(kubectl, "roles", "-n", ns)["items"]
        return cfg.roles["operations"] == ["catalog:read"] and no_roles

    for name in (SITE, OTHER):
        wait_for(lambda n=name: updated(f"kameng-{n}"), 10, f"{name} follows RolePolicy")


def test_license_reference_gates_readiness(operator: OperatorProcess, kubectl: Any) -> None:
    name = "it-life-nolic"
    fresh_start(kubectl, name)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(sample_objects(name, RP, False)))
    try:
        def stalled() -> dict[str, Any] | None:
            conds = {c["type"]: c for c in get(kubectl, "subsite", name)
                     .get("status", {}).get("conditions", [])}
            lv = conds.get("LicenseValid")
            return conds if lv and lv["reason"] == "LicenseNotFound" else None

        conds = wait_for(stalled, 10, "LicenseValid=False")
        assert conds["Ready"]["status"] == "False"
        assert conds["Stalled"]["status"] == "True"
        assert name in conds["LicenseValid"]["message"]
        lic = sample_objects(name, RP)[0]
        lic["spec"]["term"] = {"start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}
        kubectl("apply", "-f", "-", input=yaml.safe_dump(lic))
        wait_for(lambda: get(kubectl, "subsite", name)["status"].get("phase") == "Expired",
                 10, "phase Expired")
        cfg = SiteConfig.from_json(get(kubectl, "configmap", "storefront-config", "-n",
                                       f"kameng-{name}")["data"]["site.json"])
        assert cfg.mode == "suspended"
        lic["spec"]["term"] = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}
        kubectl("apply", "-f", "-", input=yaml.safe_dump(lic))
        kubectl.wait_ready(f"subsite/{name}", 15)
    finally:
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true", timeout=60)
        kubectl("delete", "license", name, "--ignore-not-found")


def test_deleted_namespace_is_rebuilt_with_the_same_keys(sites: dict[str, float],
                                                         kubectl: Any) -> None:
    """Deleting the whole namespace loses the Secrets; the data key (which encrypts card
    keys in the retained database) comes back from the operator's copy."""
    ns = f"kameng-{OTHER}"
    key = secret_value(kubectl, ns, "storefront-keys", "data-key")
    uid = get(kubectl, "namespace", ns)["metadata"]["uid"]
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=60s", timeout=90)
    wait_for(lambda: get(kubectl, "namespace", ns)["metadata"]["uid"] != uid, 30,
             "namespace recreated")
    kubectl.wait_ready(f"subsite/{OTHER}", 30)
    assert secret_value(kubectl, ns, "storefront-keys", "data-key") == key
    # A new password, set on the role: the rebuilt storefront can still connect.
    with psycopg.connect(secret_value(kubectl, ns, "storefront-db", "dsn"),
                         connect_timeout=5) as conn:
        conn.execute("SELECT 1")
