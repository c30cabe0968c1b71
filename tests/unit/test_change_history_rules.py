"""The SubSite's memory of its approvable fields, field by field: the fingerprints, the
change history (approval or YAML edit), what is kept when the spec is not observed, the
Events a new record posts, and that compute() carries all of it into the status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kameng.controller.status import (
    APPROVABLE_FIELDS,
    HISTORY_LENGTH,
    Observation,
    change_events,
    compute,
    fingerprints,
    record_changes,
)
from kameng.licensing.verdict import LicenseVerdict
from tests.unit._zones import shanghai  # noqa: F401 - a fixture

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
SPEC = {"domain": "a.example.com", "payments": {"methods": ["sandbox"]},
        "members": [{"name": "li", "email": "li@example.com", "role": "staff"}]}


def _fp(spec: dict) -> dict[str, str]:
    return dict(f.split("=") for f in fingerprints(spec))


# --- fingerprints --------------------------------------------------------------------------

def test_one_fingerprint_per_approvable_field_of_16_hex_digits() -> None:
    fp = _fp(SPEC)
    assert list(fp) == list(APPROVABLE_FIELDS)
    assert all(len(d) == 16 and int(d, 16) >= 0 for d in fp.values())


def test_a_fingerprint_ignores_key_order_and_sees_values() -> None:
    reordered = {"members": [{"role": "staff", "email": "li@example.com", "name": "li"}],
                 "payments": {"methods": ["sandbox"]}, "domain": "a.example.com"}
    assert fingerprints(reordered) == fingerprints(SPEC)
    changed = _fp({**SPEC, "members": [{"name": "li", "email": "li@example.com",
                                        "role": "admin"}]})
    assert [k for k in APPROVABLE_FIELDS if changed[k] != _fp(SPEC)[k]] == ["members"]


# --- record_changes -----------------------------------------------------------------------

def test_the_first_observation_is_only_the_baseline() -> None:
    assert record_changes(None, SPEC, "", NOW) == {"approvableFingerprints": fingerprints(SPEC)}
    assert record_changes({}, SPEC, "R0", NOW) == {
        "approvableFingerprints": fingerprints(SPEC), "lastApprovedChange": "R0"}


def test_an_unobserved_spec_keeps_what_was_recorded_and_nothing_else() -> None:
    prev = {"approvableFingerprints": ["domain=1"], "lastApprovedChange": "R1",
            "changeHistory": [{"at": "x", "fields": ["domain"], "source": "yaml"}],
            "phase": "Ready"}
    assert record_changes(prev, None, "R2", NOW) == {
        "approvableFingerprints": ["domain=1"], "lastApprovedChange": "R1",
        "changeHistory": [{"at": "x", "fields": ["domain"], "source": "yaml"}]}
    assert record_changes({"approvableFingerprints": ["domain=1"], "changeHistory": None},
                          None, "", NOW) == {"approvableFingerprints": ["domain=1"]}
    assert record_changes(None, None, "", NOW) == {}


@pytest.mark.usefixtures("shanghai")
def test_a_yaml_edit_is_recorded_with_its_fields_and_utc_time() -> None:
    base = record_changes(None, SPEC, "", NOW)
    edited = {**SPEC, "domain": "b.example.com", "payments": {"methods": ["alipay"]}}
    at = datetime(2030, 1, 1, 20, 30, 5, tzinfo=timezone(timedelta(hours=8)))
    out = record_changes(base, edited, "", at)
    assert out == {"approvableFingerprints": fingerprints(edited), "changeHistory": [
        {"at": "2030-01-01T12:30:05Z", "fields": ["payments.methods", "domain"],
         "source": "yaml"}]}


def test_a_new_approval_annotation_marks_the_change_as_approved() -> None:
    base = record_changes(None, SPEC, "R1", NOW)
    edited = {**SPEC, "domain": "b.example.com"}
    out = record_changes(base, edited, "R2", NOW)
    assert out["lastApprovedChange"] == "R2"
    assert out["changeHistory"] == [{"at": "2030-01-01T12:00:00Z", "fields": ["domain"],
                                     "source": "approval", "request": "R2"}]


@pytest.mark.parametrize("request_id", ["R2", "0", "XXXX", "a" * 64])
def test_the_first_approval_after_a_baseline_without_one_is_an_approval(request_id) -> None:
    # Whatever the id looks like: only the id seen last time makes a change a YAML edit.
    base = record_changes(None, SPEC, "", NOW)
    out = record_changes(base, {**SPEC, "domain": "b.example.com"}, request_id, NOW)
    assert out["changeHistory"][-1]["source"] == "approval"
    assert out["changeHistory"][-1]["request"] == request_id


def test_an_old_approval_annotation_does_not_approve_a_later_edit() -> None:
    base = record_changes(None, SPEC, "R1", NOW)
    assert base["lastApprovedChange"] == "R1"
    edited = {**SPEC, "domain": "b.example.com"}
    out = record_changes(base, edited, "R1", NOW)
    assert out["changeHistory"][-1]["source"] == "yaml"
    assert "request" not in out["changeHistory"][-1]
    assert out["lastApprovedChange"] == "R1"
    # Without any annotation a change is a YAML edit, even after earlier approvals.
    out = record_changes({**base, "lastApprovedChange": None}, edited, "", NOW)
    assert out["changeHistory"][-1]["source"] == "yaml"


def test_the_history_keeps_the_last_ten() -> None:
    prev = record_changes(None, SPEC, "", NOW)
    for i in range(HISTORY_LENGTH + 2):
        prev = record_changes(prev, {**SPEC, "domain": f"d{i}.example.com"}, "",
                              NOW + timedelta(minutes=i))
    assert HISTORY_LENGTH == 10
    assert len(prev["changeHistory"]) == 10
    assert prev["changeHistory"][0]["at"] == "2030-01-01T12:02:00Z"


# --- change_events ------------------------------------------------------------------------

def _rec(**kw) -> dict:
    return {"at": "2030-01-01T12:00:00Z", "fields": ["payments.methods", "domain"],
            "source": "yaml", **kw}


def test_an_approved_change_is_a_normal_event_naming_the_request() -> None:
    new = {"changeHistory": [_rec(source="approval", request="R9")]}
    assert change_events(None, new, ()) == [
        ("Normal", "ApprovedChangeApplied",
         "payments.methods, domain changed by HQ approval R9")]
    new = {"changeHistory": [_rec(source="approval")]}
    assert change_events(None, new, ()) == [
        ("Normal", "ApprovedChangeApplied", "payments.methods, domain changed by HQ approval ")]


def test_a_yaml_edit_of_a_field_behind_approval_is_a_warning_naming_only_those() -> None:
    new = {"changeHistory": [_rec()]}
    assert change_events({}, new, ("domain", "members")) == [
        ("Warning", "ChangedOutsideApproval",
         "domain changed in the SubSite directly, not through an HQ approval (recorded in "
         "status.changeHistory)")]
    assert change_events({}, new, ("domain", "payments.methods"))[0][2].startswith(
        "payments.methods, domain changed in the SubSite directly")


def test_a_yaml_edit_of_free_fields_is_a_normal_event() -> None:
    assert change_events(None, {"changeHistory": [_rec()]}, ()) == [
        ("Normal", "ChangedOutsideApproval", "payments.methods, domain changed in the SubSite")]


def test_no_event_without_a_new_record() -> None:
    one = [_rec(at="a")]
    assert change_events(None, {}, ("domain",)) == []
    assert change_events({"changeHistory": one}, {"changeHistory": one}, ("domain",)) == []
    # The history is capped: the newest record is what counts, not the length.
    two = [_rec(at="a"), _rec(at="b")]
    assert change_events({"changeHistory": two}, {"changeHistory": [two[1], _rec(at="c")]},
                         ())[0][0] == "Normal"
    assert change_events({"changeHistory": two}, {"changeHistory": [*two, _rec(at="c")]},
                         ())[0][0] == "Normal"
    assert change_events({"changeHistory": [_rec(at="x"), two[1]]}, {"changeHistory": two},
                         ()) == []


# --- compute carries the record into the status ------------------------------------------

def _obs(**kw) -> Observation:
    lic = LicenseVerdict(True, "LicenseActive", "License valid", state="Active",
                         mode="normal", expires_at="2031-01-01T00:00:00Z")
    base: dict = {"generation": 5, "namespace": "kameng-demo", "url": "http://d.example",
                  "license": lic, "database_ready": True, "database_message": "db ok",
                  "now": NOW, "desired_replicas": 1,
                  "deployment": {"metadata": {"generation": 1}, "status": {
                      "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                      "readyReplicas": 1, "availableReplicas": 1}}}
    base.update(kw)
    return Observation(**base)


def test_compute_records_changes_from_the_previous_status() -> None:
    first = compute(_obs(spec=SPEC, approved_change="R1"), None)
    assert first["approvableFingerprints"] == fingerprints(SPEC)
    assert first["lastApprovedChange"] == "R1"
    edited = {**SPEC, "domain": "b.example.com"}
    second = compute(_obs(spec=edited, approved_change="R2",
                          now=NOW + timedelta(hours=1)), first)
    assert second["changeHistory"] == [{"at": "2030-01-01T13:00:00Z", "fields": ["domain"],
                                        "source": "approval", "request": "R2"}]
    assert compute(_obs(spec=None), second)["changeHistory"] == second["changeHistory"]


# --- terminating: the Exported condition of a site being deleted -------------------------

def test_the_exported_condition_carries_its_reason_message_and_generation() -> None:
    from kameng.api import conditions as c
    from kameng.controller.status import condition, terminating
    out = terminating(None, "Exporting", "writing the archive", False, 7, NOW,
                      phase="Exporting",
                      exported=(False, "ExportRunning", "archive being written"))
    exp = condition(out, c.EXPORTED)
    assert exp is not None
    assert (exp["status"], exp["reason"], exp["message"], exp["observedGeneration"]) == (
        "False", "ExportRunning", "archive being written", 7)
    assert condition(out, c.READY)["observedGeneration"] == 7  # type: ignore[index]
