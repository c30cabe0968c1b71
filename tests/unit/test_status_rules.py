"""SubSite status at its edges: when a Deployment counts as available, which reason and
message Ready carries in each situation, when a site is Stalled or Reconciling, which
Events a change posts, and that a missing RolePolicy or members with unknown roles are
reported (Failed, Stalled, the roles named) rather than ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.controller.reconcile import _problem
from kameng.controller.status import (
    Observation,
    compute,
    condition,
    deployment_available,
    terminating,
    transitions,
)
from kameng.licensing.verdict import LicenseVerdict

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ACTIVE = LicenseVerdict(True, "LicenseActive", "License valid", state="Active", mode="normal",
                        expires_at="2031-01-01T00:00:00Z")


def dep(gen: int = 2, observed: int = 2, replicas: int = 2, updated: int = 2, ready: int = 2,
        available: int = 2) -> dict:
    return {"metadata": {"generation": gen},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "readyReplicas": ready,
                       "availableReplicas": available}}


def obs(**kw) -> Observation:
    base: dict = {"generation": 5, "namespace": "kameng-demo", "url": "http://d.example",
                  "license": ACTIVE, "database_ready": True, "database_message": "db ok",
                  "deployment": dep(), "desired_replicas": 2, "now": T0}
    base.update(kw)
    return Observation(**base)


def cond(status: dict, t: str) -> tuple[str, str, str]:
    c = condition(status, t)
    assert c is not None, t
    return c["status"], c["reason"], c["message"]


# --- deployment_available -----------------------------------------------------------------


@pytest.mark.parametrize(("d", "replicas", "expected"), [
    (None, 2, (False, "Deployment storefront does not exist yet", 0)),
    (dep(), 2, (True, "2/2 storefront pods available", 2)),
    (dep(gen=3), 2, (False, "Deployment storefront is being updated", 2)),
    (dep(updated=1), 2, (False, "Rolling out: 1/2 updated", 2)),
    (dep(replicas=3), 2, (False, "Rolling out: 2/2 updated", 2)),  # an old pod still runs
    (dep(available=1, ready=1), 2, (False, "1/2 storefront pods available", 1)),
    (dep(replicas=3, updated=3, available=3, ready=3), 3, (True, "3/3 storefront pods available",
                                                           3)),
    # Fresh Deployment: no status fields at all yet.
    ({"metadata": {"generation": 1}, "status": {}}, 1,
     (False, "Deployment storefront is being updated", 0)),
    ({"metadata": {"generation": 1}}, 1, (False, "Deployment storefront is being updated", 0)),
    # Status fields present but null (the API server may send them so).
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": None,
                                                "updatedReplicas": None, "readyReplicas": None,
                                                "availableReplicas": None}}, 1,
     (False, "Rolling out: 0/1 updated", 0)),
    # No generation in the metadata counts as 1.
    ({"metadata": {}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                                 "readyReplicas": 1, "availableReplicas": 1}}, 1,
     (True, "1/1 storefront pods available", 1)),
    ({"metadata": {}, "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                                 "availableReplicas": 1}}, 1,
     (False, "Deployment storefront is being updated", 1)),
    # Zero replicas wanted and none running: available.
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}, 0,
     (True, "0/0 storefront pods available", 0)),
])
def test_deployment_available(d, replicas, expected):
    assert deployment_available(d, replicas) == expected


# --- compute: the reason and message of each situation ------------------------------------


def test_ready_names_the_url_and_settles():
    s = compute(obs(), None)
    assert s["phase"] == "Ready"
    assert cond(s, "Ready") == ("True", "Ready", "Storefront serves http://d.example")
    assert cond(s, "Reconciling") == ("False", "Settled", "")
    assert cond(s, "Stalled") == ("False", "NotStalled", "")
    assert cond(s, "LicenseValid") == ("True", "LicenseActive", "License valid")
    assert cond(s, "DatabaseReady") == ("True", "Provisioned", "db ok")
    assert cond(s, "StorefrontAvailable") == ("True", "Available", "2/2 storefront pods available")
    assert (s["namespace"], s["url"], s["observedGeneration"]) == (
        "kameng-demo", "http://d.example", 5)
    assert all(c["observedGeneration"] == 5 for c in s["conditions"])


def test_a_failed_apply_is_never_ready():
    # The reconcile could not apply a child: everything else looks fine.
    s = compute(obs(transient_error="apply Deployment storefront: 500"), None)
    assert s["phase"] == "Provisioning"
    assert cond(s, "Ready") == ("False", "ReconcileError", "apply Deployment storefront: 500")
    assert cond(s, "Reconciling") == ("True", "Progressing", "apply Deployment storefront: 500")
    assert cond(s, "Stalled") == ("False", "NotStalled", "")


def test_database_not_ready_is_reconciling():
    s = compute(obs(database_ready=False, database_message="creating database"), None)
    assert s["phase"] == "Provisioning"
    assert cond(s, "Ready") == ("False", "DatabaseNotReady", "creating database")
    assert cond(s, "DatabaseReady") == ("False", "NotProvisioned", "creating database")
    assert cond(s, "Reconciling")[0] == "True"


def test_storefront_not_available():
    s = compute(obs(deployment=None), None)
    assert cond(s, "Ready") == ("False", "StorefrontNotAvailable",
                                "Deployment storefront does not exist yet")
    assert cond(s, "StorefrontAvailable") == ("False", "NotAvailable",
                                              "Deployment storefront does not exist yet")
    assert s["readyReplicas"] == 0


def test_license_for_another_site_is_stalled_not_reconciling():
    v = LicenseVerdict(False, "LicenseForOtherSite", "License 'l' is for sub-site 'x'")
    s = compute(obs(license=v), None)
    assert s["phase"] == "Pending"
    assert cond(s, "Stalled") == ("True", "LicenseForOtherSite", "License 'l' is for sub-site 'x'")
    assert cond(s, "Reconciling") == ("False", "Settled", "")
    assert cond(s, "Ready") == ("False", "LicenseForOtherSite", "License 'l' is for sub-site 'x'")


def test_a_license_in_grace_is_not_stalled_and_not_pending():
    v = LicenseVerdict(False, "LicenseGrace", "read-only", state="Grace", mode="readOnly")
    s = compute(obs(license=v), None)
    assert s["phase"] == "Provisioning"
    assert cond(s, "Stalled")[0] == "False"
    assert cond(s, "Ready") == ("False", "LicenseGrace", "read-only")
    assert s["licenseState"] == "Grace"


def test_an_expired_license_expires_the_site():
    v = LicenseVerdict(False, "LicenseExpired", "grace ended", state="Expired")
    s = compute(obs(license=v), None)
    assert s["phase"] == "Expired"
    assert cond(s, "Reconciling")[0] == "False"
    assert ("Warning", "PhaseExpired", "Phase is now Expired: grace ended") in transitions(None, s)


def test_a_problem_wins_over_a_bad_license_in_ready():
    v = LicenseVerdict(False, "LicenseNotFound", "no license")
    s = compute(obs(license=v, problem="RolePolicy 'rp' does not exist",
                    problem_reason="RolePolicyNotFound"), None)
    assert s["phase"] == "Failed"
    assert cond(s, "Ready") == ("False", "RolePolicyNotFound", "RolePolicy 'rp' does not exist")


# --- unknown roles and a missing RolePolicy -----------------------------------------------


def _spec(*roles: str) -> SubSiteSpec:
    return SubSiteSpec.model_validate({
        "displayName": "Demo", "owner": {"name": "o", "email": "o@example.com"},
        "licenseRef": "demo", "rolePolicyRef": "standard", "domain": "demo.example.com",
        "members": [{"name": f"m{i}", "email": f"m{i}@example.com", "role": r}
                    for i, r in enumerate(roles)]})


def _rp(*names: str) -> RolePolicySpec:
    return RolePolicySpec.model_validate(
        {"roles": [{"name": n, "permissions": ["orders:read"]} for n in names]})


def test_missing_role_policy_is_reported_in_status():
    problem = _problem(_spec("finance"), None)
    assert problem == ("RolePolicyNotFound", "RolePolicy 'standard' does not exist")
    s = compute(obs(problem=problem[1], problem_reason=problem[0]), None)
    assert s["phase"] == "Failed"
    assert cond(s, "Ready") == ("False", "RolePolicyNotFound",
                                "RolePolicy 'standard' does not exist")
    assert cond(s, "Stalled") == ("True", "RolePolicyNotFound",
                                  "RolePolicy 'standard' does not exist")
    assert cond(s, "Reconciling")[0] == "False"
    assert ("Warning", "PhaseFailed",
            "Phase is now Failed: RolePolicy 'standard' does not exist") in transitions(None, s)


def test_members_with_unknown_roles_are_named_in_status():
    assert _problem(_spec("finance", "operations"), _rp("finance", "operations")) is None
    assert _problem(_spec(), _rp("finance")) is None
    problem = _problem(_spec("finance", "root", "ghost", "root"), _rp("finance"))
    assert problem == ("UnknownRole",
                       "members use roles missing from RolePolicy 'standard': ghost, root")
    s = compute(obs(problem=problem[1], problem_reason=problem[0]), None)
    assert s["phase"] == "Failed"
    assert cond(s, "Stalled") == ("True", "UnknownRole", problem[1])
    assert cond(s, "Ready")[1:] == ("UnknownRole", problem[1])


# --- terminating and transitions ----------------------------------------------------------


def test_terminating_reason_generation_and_messages():
    live = compute(obs(), None)
    t = terminating(live, "Reclaiming", "dropping database", False, 6, T0 + timedelta(hours=1))
    assert cond(t, "Ready") == ("False", "Reclaiming", "dropping database")
    assert cond(t, "Reconciling") == ("True", "Reclaiming", "dropping database")
    assert cond(t, "Stalled") == ("False", "Reclaiming", "")
    assert condition(t, "Ready")["observedGeneration"] == 6
    failed = terminating(t, "ReclaimFailed", "db down", True, 6, T0)
    assert cond(failed, "Stalled") == ("True", "ReclaimFailed", "db down")
    assert cond(failed, "Reconciling")[0] == "False"
    assert terminating(None, "Reclaiming", "m", False, 1, T0)["phase"] == "Terminating"


def test_transitions_post_one_event_per_change():
    ready = compute(obs(), None)
    assert transitions(None, ready) == [
        ("Normal", "PhaseReady", "Phase is now Ready: Storefront serves http://d.example")]
    v = LicenseVerdict(False, "LicenseSuspended", "suspended by HQ", state="Suspended")
    sus = compute(obs(license=v), ready)
    assert transitions(ready, sus) == [
        ("Warning", "PhaseSuspended", "Phase is now Suspended: suspended by HQ"),
        ("Warning", "LicenseSuspended", "suspended by HQ")]
    # Same phase, database lost: only the database warning.
    db = compute(obs(database_ready=False, database_message="down",
                     deployment=dep(available=0)), compute(obs(deployment=dep(available=0)),
                                                            None))
    prov = compute(obs(deployment=dep(available=0)), None)
    assert transitions(prov, db) == [("Warning", "NotProvisioned", "down")]
    # Recovering is not a warning; a phase without a Ready condition still has a message.
    assert transitions(db, prov) == []
    assert transitions({"phase": "Ready"}, {"phase": "Pending"}) == [
        ("Normal", "PhasePending", "Phase is now Pending: ")]
