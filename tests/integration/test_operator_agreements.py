"""The operator keeps License and RolePolicy status true: state and expiry for
`kubectl get lic`, role count and users for `kubectl get rp`, Events on transitions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.support.operator import OperatorProcess
from tests.support.wait import wait_until_quiet

from .test_operator_lifecycle import fresh_start, get, sample_objects, wait_for

SITE, RP = "it-agree", "it-agree-rp"


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    fresh_start(kubectl, SITE)
    yield op
    kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=true", timeout=60)
    kubectl("delete", "license", SITE, "--ignore-not-found")
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
    op.stop()


def _rfc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_license_and_rolepolicy_status(operator: OperatorProcess, kubectl: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    docs = sample_objects(SITE, RP)
    docs[0]["spec"]["term"] = {"start": _rfc(now - timedelta(days=300)),
                               "end": _rfc(now + timedelta(days=10))}
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    lic = wait_for(lambda: get(kubectl, "license", SITE).get("status", {}).get("state")
                   and get(kubectl, "license", SITE), 15, "License status")
    assert lic["status"]["state"] == "ExpiringSoon"
    assert lic["status"]["expiresAt"] == _rfc(now + timedelta(days=10))
    assert lic["status"]["observedGeneration"] == lic["metadata"]["generation"]
    printed = kubectl("get", "license", SITE).stdout
    assert "ExpiringSoon" in printed
    assert _rfc(now + timedelta(days=10)) in printed
    # One life cycle: the SubSite's LICENSE column says the same as the License.
    wait_for(lambda: get(kubectl, "subsite", SITE).get("status", {}).get("licenseState")
             == "ExpiringSoon", 20, "SubSite licenseState")
    assert "ExpiringSoon" in kubectl("get", "ss", SITE).stdout

    rp = wait_for(lambda: get(kubectl, "rolepolicy", RP).get("status", {}).get("usedBy")
                  and get(kubectl, "rolepolicy", RP), 15, "RolePolicy status")
    assert rp["status"]["roleCount"] == 3
    assert rp["status"]["usedBy"] == 1

    # A renewal moves it back to Active; a suspension to Suspended, with Events.
    kubectl("patch", "license", SITE, "--type=merge", "-p", json.dumps(
        {"spec": {"term": {"start": docs[0]["spec"]["term"]["start"],
                           "end": _rfc(now + timedelta(days=400))}}}))
    wait_for(lambda: get(kubectl, "license", SITE)["status"]["state"] == "Active", 15,
             "Active after renewal")
    kubectl("patch", "license", SITE, "--type=merge", "-p",
            '{"spec": {"suspended": true, "suspendReason": "risk"}}')
    lic = wait_for(lambda: (lic := get(kubectl, "license", SITE))["status"]["state"]
                   == "Suspended" and lic, 15, "Suspended")
    assert "risk" in lic["status"]["conditions"][0]["message"]
    events = wait_for(lambda: [e for e in get(kubectl, "events", "-n", "default")["items"]
                               if e["involvedObject"].get("name") == SITE
                               and e["involvedObject"].get("kind") == "License"
                               and e["reason"] == "LicenseSuspended"], 15, "Event")
    assert events[0]["type"] == "Warning"


def test_status_writes_stop_when_nothing_changes(operator: OperatorProcess,
                                                 kubectl: Any) -> None:
    # Polled, not slept: the writes must stop (a quiet window of 5 s comes within a
    # minute) and an operator that rewrites status every round never gets one.
    wait_until_quiet(lambda: (get(kubectl, "license", SITE)["metadata"]["resourceVersion"],
                              get(kubectl, "rolepolicy", RP)["metadata"]["resourceVersion"]),
                     quiet_for=5, timeout=60, what="License and RolePolicy resourceVersion")


def test_time_alone_moves_the_state_on_time(operator: OperatorProcess, kubectl: Any) -> None:
    """No edit, no 60 s sweep: the operator wakes when the License's state changes."""
    name = "it-agree-clock"
    now = datetime.now(UTC).replace(microsecond=0)
    lic = sample_objects(name, RP)[0]
    lic["spec"]["term"] = {"start": _rfc(now - timedelta(days=1)),
                           "end": _rfc(now + timedelta(days=30, seconds=8))}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(lic))
    try:
        wait_for(lambda: get(kubectl, "license", name).get("status", {}).get("state")
                 == "Active", 15, "Active")
        wait_for(lambda: get(kubectl, "license", name).get("status", {}).get("state")
                 == "ExpiringSoon", 20, "ExpiringSoon on time")
        assert datetime.now(UTC) < now + timedelta(seconds=25)
    finally:
        kubectl("delete", "license", name, "--ignore-not-found")
