"""Pure rules of tenancy: who owns a derived name, who holds a domain, what counts as a
foreign change to a pod template, which member rules are safe."""

from __future__ import annotations

import copy

import pytest

from kameng.api.names import RESERVED_PREFIXES, RESERVED_SITE_NAMES
from kameng.api.resources import SUBSITE
from kameng.api.subsite import SubSiteSpec
from kameng.children.context import SiteContext
from kameng.children.namespace import (
    PLAN_DB_CONNECTIONS,
    db_pool_size,
    namespace,
    namespace_ownership,
)
from kameng.children.rbac import _OPERATE_RULES, _VIEW_RULES, safe_rules
from kameng.children.workload import deployment
from kameng.controller.domains import DomainClaim, conflict_message, holder
from kameng.kube.drift import foreign_fields, with_hash
from kameng.provision.names import mark, marked_uid
from kameng.provision.ownership import Claim, NotOurs, judge

UID, OLD = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def ctx(replicas: int = 2) -> SiteContext:
    spec = SubSiteSpec.model_validate({
        "displayName": "Demo", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example",
        "storefront": {"replicas": replicas}})
    return SiteContext(name="demo", uid=UID, spec=spec)


# --- ownership -----------------------------------------------------------------------

def test_marks_round_trip() -> None:
    assert marked_uid(mark(UID)) == UID
    assert marked_uid(None) is None
    assert marked_uid("created by a person") is None


def test_judge_creates_keeps_and_refuses() -> None:
    claim = Claim(UID)
    assert judge("role r", False, None, claim) == "create"
    assert judge("role r", True, UID, claim) == "ours"
    with pytest.raises(NotOurs) as unmarked:
        judge("role r", True, None, claim)
    assert unmarked.value.reason == "NameConflict"
    assert "role r" in str(unmarked.value)
    with pytest.raises(NotOurs) as retained:
        judge("database d", True, OLD, claim)
    assert retained.value.reason == "RetainedDataExists"
    assert f"adoptRetainedFrom: {OLD}" in str(retained.value)


def test_judge_adopts_only_what_a_person_named_or_a_legacy_site() -> None:
    assert judge("d", True, OLD, Claim(UID, adopt_from=OLD)) == "adopt"
    with pytest.raises(NotOurs):
        judge("d", True, OLD, Claim(UID, adopt_from=UID))
    assert judge("d", True, None, Claim(UID, adopt_unmarked=True)) == "adopt"
    # A legacy namespace never hands over another SubSite's marked data.
    with pytest.raises(NotOurs):
        judge("d", True, OLD, Claim(UID, adopt_unmarked=True))


def test_namespace_is_marked_and_judged() -> None:
    ns = namespace(ctx())
    assert ns["metadata"]["labels"]["kameng.io/subsite-uid"] == UID
    assert namespace_ownership(None, UID) == "create"
    assert namespace_ownership(ns, UID) == "ours"
    legacy = copy.deepcopy(ns)
    del legacy["metadata"]["labels"]["kameng.io/subsite-uid"]
    assert namespace_ownership(legacy, UID) == "legacy"
    assert namespace_ownership(legacy, OLD) == "foreign"  # ownerReference is another's
    assert namespace_ownership({"metadata": {"name": "kameng-system"}}, UID) == "foreign"
    going = copy.deepcopy(ns)
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert namespace_ownership(going, OLD) == "terminating"


def test_reserved_names_rule_covers_the_platforms_own_names() -> None:
    rule = SUBSITE.root_rules[-1]["rule"]
    for name in RESERVED_SITE_NAMES:
        assert f"'{name}'" in rule
    for prefix in RESERVED_PREFIXES:
        assert f"startsWith('{prefix}')" in rule
    assert {"system", "admin", "default"} <= set(RESERVED_SITE_NAMES)
    assert "kube-" in RESERVED_PREFIXES


# --- connection limit ----------------------------------------------------------------

@pytest.mark.parametrize("replicas", [1, 2, 5, 20])
def test_pools_fit_the_connection_limit(replicas: int) -> None:
    c = ctx(replicas)
    size = db_pool_size(c)
    assert size >= 2
    if replicas < 19:
        assert size * (replicas + 1) <= PLAN_DB_CONNECTIONS["basic"]
    env = {e["name"]: e["value"] for e in
           deployment(c, "x")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAMENG_DB_POOL_SIZE"] == str(size)


# --- domains -------------------------------------------------------------------------

A = DomainClaim("2026-01-01T00:00:00Z", "alpha", "a")
B = DomainClaim("2026-01-02T00:00:00Z", "beta", "b")
C = DomainClaim("2026-01-01T00:00:00Z", "charlie", "c")


def test_earliest_claimant_holds_the_domain() -> None:
    assert holder([A], "alpha", "a") is None
    assert holder([A, B], "alpha", "a") is None
    assert holder([B, A], "beta", "b") == A
    # Same second: the name decides.
    assert holder([C, A], "charlie", "c") == A
    # Not indexed yet: whoever is indexed came first.
    assert holder([A], "beta", "b") == A
    assert "alpha" in conflict_message("shop.example", A)


# --- foreign pod-template changes ----------------------------------------------------

def test_own_template_and_server_defaults_are_not_foreign() -> None:
    desired = with_hash(deployment(ctx(), "x"))
    live = copy.deepcopy(desired)
    spec = live["spec"]["template"]["spec"]
    spec.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default",
                terminationGracePeriodSeconds=30, serviceAccount="storefront")
    spec["containers"][0].update(imagePullPolicy="IfNotPresent",
                                 terminationMessagePath="/dev/termination-log",
                                 terminationMessagePolicy="File")
    assert foreign_fields(desired, live) == []
    assert foreign_fields({"kind": "ConfigMap", "data": {}}, {"data": {"x": "y"}}) == []


def test_foreign_additions_are_found() -> None:
    desired = with_hash(deployment(ctx(), "x"))
    live = copy.deepcopy(desired)
    spec = live["spec"]["template"]["spec"]
    spec["initContainers"] = [{"name": "leak", "image": "busybox"}]
    spec["volumes"].append({"name": "extra", "emptyDir": {}})
    spec["containers"].append({"name": "sidecar", "image": "busybox"})
    spec["containers"][0]["env"].append({"name": "LEAK", "value": "1"})
    spec["containers"][0]["envFrom"] = [{"secretRef": {"name": "storefront-db"}}]
    spec["containers"][0]["volumeMounts"].append({"name": "extra", "mountPath": "/x"})
    spec["serviceAccountName"] = "default"
    spec["serviceAccount"] = "default"
    spec["hostPID"] = True
    found = foreign_fields(desired, live)
    for part in ("spec.initContainers", "spec.volumes[extra]", "spec.containers[sidecar]",
                 "env[LEAK]", "containers[storefront].envFrom", "volumeMounts[extra]",
                 "spec.serviceAccount", "spec.hostPID"):
        assert any(part in f for f in found), (part, found)


# --- member roles --------------------------------------------------------------------

def test_member_rules_never_reach_secrets() -> None:
    assert safe_rules([*_VIEW_RULES, *_OPERATE_RULES])
    assert not safe_rules([{"resources": ["deployments"], "verbs": ["patch"]}])
    assert not safe_rules([{"resources": ["pods/exec"], "verbs": ["create"]}])
    assert not safe_rules([{"resources": ["secrets"], "verbs": ["get"]}])
    assert not safe_rules([{"resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]}])


def test_database_left_unmarked_by_a_crash_is_still_ours() -> None:
    from kameng.provision.postgres import _db_owner

    role = (True, 40, mark(UID))
    assert _db_owner("kameng_demo", role, ("kameng_demo", None)) == UID
    assert _db_owner("kameng_demo", role, ("kameng_demo", mark(OLD))) == OLD
    # Owned by someone else, or the role itself unmarked: not ours.
    assert _db_owner("kameng_demo", role, ("alice", None)) is None
    assert _db_owner("kameng_demo", (True, 40, None), ("kameng_demo", None)) is None
    assert _db_owner("kameng_demo", role, None) is None
