from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kameng.api.subsite import SubSiteStatus
from kameng.controller.status import Observation, compute, condition, transitions
from kameng.licensing.verdict import LicenseVerdict

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ACTIVE = LicenseVerdict(True, "LicenseActive", "ok", state="Active", mode="normal",
                        expires_at="2031-01-01T00:00:00Z")
DEP_OK = {"metadata": {"generation": 2},
          "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                     "readyReplicas": 2, "availableReplicas": 2}}


def obs(**kw: object) -> Observation:
    base: dict = {"generation": 5, "namespace": "kameng-demo", "url": "http://d.example",
                  "license": ACTIVE, "database_ready": True, "database_message": "ok",
                  "deployment": DEP_OK, "desired_replicas": 2, "now": T0}
    base.update(kw)
    return Observation(**base)


def cond(status: dict, t: str) -> str:
    return (condition(status, t) or {})["status"]


def test_ready_when_everything_is() -> None:
    s = compute(obs(), None)
    SubSiteStatus.model_validate(s)  # fits the CRD schema: nothing gets pruned
    assert s["phase"] == "Ready"
    assert s["readyReplicas"] == 2
    assert [cond(s, t) for t in ("Ready", "Reconciling", "Stalled", "LicenseValid",
                                 "DatabaseReady", "StorefrontAvailable")] == \
        ["True", "False", "False", "True", "True", "True"]
    assert all(c["observedGeneration"] == 5 for c in s["conditions"])
    assert s["licenseState"] == "Active"
    assert s["licenseExpiresAt"] == "2031-01-01T00:00:00Z"


def test_rollout_in_progress_is_reconciling() -> None:
    dep = {"metadata": {"generation": 3}, "status": {**DEP_OK["status"]}}
    s = compute(obs(deployment=dep), None)
    assert s["phase"] == "Provisioning"
    assert cond(s, "Ready") == "False"
    assert cond(s, "Reconciling") == "True"
    assert condition(s, "Ready")["reason"] == "StorefrontNotAvailable"


def test_missing_license_is_stalled_and_pending() -> None:
    v = LicenseVerdict(False, "LicenseNotFound", "License 'x' does not exist")
    s = compute(obs(license=v), None)
    assert s["phase"] == "Pending"
    assert cond(s, "Stalled") == "True"
    assert cond(s, "Reconciling") == "False"
    assert condition(s, "LicenseValid")["message"] == "License 'x' does not exist"


def test_suspended_license_suspends_the_site() -> None:
    v = LicenseVerdict(False, "LicenseSuspended", "suspended", state="Suspended")
    assert compute(obs(license=v), None)["phase"] == "Suspended"


def test_transition_time_survives_an_unchanged_status() -> None:
    first = compute(obs(), None)
    again = compute(obs(now=T0 + timedelta(hours=1)), first)
    assert again == first  # byte-identical: no status write


def test_transition_time_moves_on_change() -> None:
    first = compute(obs(), None)
    later = compute(obs(database_ready=False, now=T0 + timedelta(hours=1)), first)
    assert condition(later, "DatabaseReady")["lastTransitionTime"] == "2030-01-01T01:00:00Z"
    assert condition(later, "LicenseValid")["lastTransitionTime"] == "2030-01-01T00:00:00Z"


def test_events_only_on_transitions() -> None:
    first = compute(obs(), None)
    assert [e[1] for e in transitions(None, first)] == ["PhaseReady"]
    assert transitions(first, compute(obs(), first)) == []
    broken = compute(obs(database_ready=False, database_message="down"), first)
    kinds = transitions(first, broken)
    assert ("Warning", "NotProvisioned", "down") in kinds


def test_invalid_spec_is_failed_and_stalled() -> None:
    v = LicenseVerdict(False, "InvalidSpec", "bad")
    s = compute(obs(license=v, problem="bad", problem_reason="InvalidSpec", deployment=None),
                None)
    assert s["phase"] == "Failed"
    assert cond(s, "Stalled") == "True"
    assert condition(s, "Ready")["reason"] == "InvalidSpec"


def test_set_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    from kameng.api.conditions import set_condition

    first = set_condition(None, "Ready", True, "A", "a", T0, 1)
    same = set_condition(first, "Ready", True, "B", "b", T0 + timedelta(hours=1), 2)
    flipped = set_condition(same, "Ready", False, "C", "c", T0 + timedelta(hours=2), 2)
    assert same[0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("B", 2)
    assert flipped[0]["lastTransitionTime"] == "2030-01-01T02:00:00Z"
    assert first[0]["reason"] == "A"  # the input list is not changed
    both = set_condition(first, "Stalled", "False", "NotStalled", "", T0, 1)
    assert [c["type"] for c in both] == ["Ready", "Stalled"]


def test_terminating_status_keeps_other_conditions_and_settles() -> None:
    from kameng.controller.status import terminating

    live = compute(obs(), None)
    t1 = terminating(live, "Reclaiming", "reclaiming", False, 5, T0 + timedelta(hours=1))
    assert t1["phase"] == "Terminating"
    assert [cond(t1, t) for t in ("Ready", "Reconciling", "Stalled", "DatabaseReady")] == \
        ["False", "True", "False", "True"]
    again = terminating({**live, **t1}, "Reclaiming", "reclaiming", False, 5,
                        T0 + timedelta(hours=2))
    assert again == t1  # nothing changed: no write
    failed = terminating(t1, "ReclaimFailed", "db down", True, 5, T0 + timedelta(hours=3))
    assert (cond(failed, "Stalled"), condition(failed, "Stalled")["message"]) == \
        ("True", "db down")


def test_a_new_sites_first_phase_posts_no_event_but_its_ready_does() -> None:
    provisioning = compute(obs(deployment=None), None)
    assert provisioning["phase"] == "Provisioning"
    assert transitions(None, provisioning) == []
    ready = compute(obs(), provisioning)
    assert [e[1] for e in transitions(provisioning, ready)] == ["PhaseReady"]
    # A site that starts in a bad phase still says so at once.
    failed = compute(obs(problem="bad"), None)
    assert [e[1] for e in transitions(None, failed)] == ["PhaseFailed"]


def test_database_server_kept_when_a_reconcile_cannot_tell() -> None:
    placed = compute(obs(database_server="pg-b"), None)
    assert placed["databaseServer"] == "pg-b"
    assert compute(obs(), placed)["databaseServer"] == "pg-b"
