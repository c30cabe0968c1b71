"""The scale test, small: a batch of SubSites sharing one RolePolicy converges, the
operator's writes stay proportional to what changed (not to the number of sites), an
idle window writes nothing, and random spec edits converge. Deadlines are generous:
this is not a timed test (`bench/operator_bench.py` prints the figures)."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kameng.children.context import namespace_name
from tests.support.operator import OperatorProcess, batch_objects

PREFIX = "it-scale"
COUNT = 24
# Writes per site until Ready. The issue asks for 18; the floor today is 21 (17 children,
# the License's and the SubSite's status, the key copy, the HQ credential entry) plus the
# phase Events. Measured alone: 30.5 before the fixes, 24.3 after; a loaded machine adds
# transient retries (their status writes and Events), hence the margin.
MAX_WRITES_PER_SITE = 28


def _subsites(kubectl: Any) -> list[dict[str, Any]]:
    items = json.loads(kubectl("get", "subsites", "-o", "json").stdout)["items"]
    return [o for o in items if o["metadata"]["name"].startswith(PREFIX + "-")]


def _converged(kubectl: Any) -> bool:
    sites = _subsites(kubectl)
    return len(sites) == COUNT and all(
        (o.get("status") or {}).get("phase") == "Ready" and
        (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
        for o in sites)


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _delete_batch(kubectl: Any) -> None:
    names = [f"{PREFIX}-{i:04d}" for i in range(COUNT)]
    kubectl("delete", "subsite", *names, "--ignore-not-found", "--wait=true",
            "--timeout=300s", timeout=330)
    kubectl("delete", "license", *names, "--ignore-not-found")
    kubectl("delete", "rolepolicy", f"{PREFIX}-rp", "--ignore-not-found")


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    # No periodic resync inside the module: its tests count reconciles and writes, and a
    # resync (every 4-6 minutes) landing in a window on a slow machine is not a wake-up.
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log",
                         extra_env={"KAMENG_RESYNC_SECONDS": "3600"}).start()
    _delete_batch(kubectl)  # leftovers of an interrupted run
    try:
        yield op
    finally:
        _delete_batch(kubectl)
        op.stop()


@pytest.fixture(scope="module")
def converged(operator: OperatorProcess, kubectl: Any) -> dict[str, float]:
    before = operator.writes_by_kind()
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(batch_objects(PREFIX, COUNT)),
            timeout=120)
    _wait(lambda: _converged(kubectl), 600, f"{COUNT} SubSites Ready")
    time.sleep(3)  # the last watch events and coalesced status writes settle
    after = operator.writes_by_kind()
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def test_writes_proportional_to_changes(converged: dict[str, float]) -> None:
    print("operator writes by kind until Ready:", converged)
    # One RolePolicy: its usage count may change many times while the batch lands, but
    # its status is written a bounded number of times, not once per site.
    assert converged.get("RolePolicy", 0) <= 4, converged
    # Each child is applied once: a value the server omits (`value: ""`) is not drift
    # (before: 2-4 Deployment applies per site).
    assert converged.get("Deployment", 0) <= COUNT * 1.1, converged
    # Events: one per transition (a new site's first phase is none, nor is a new
    # License's first Active state; PhaseReady is), repeats bump a count instead of
    # adding objects (before: 3 per site, PhaseProvisioning included; then 2.26 with
    # LicenseActive; the margin is for a transient retry on a loaded machine).
    assert converged.get("Event", 0) <= COUNT * 1.25, converged
    total = sum(converged.values())
    assert total / COUNT <= MAX_WRITES_PER_SITE, converged


def test_idle_window_writes_nothing(converged: dict[str, float],
                                    operator: OperatorProcess) -> None:
    before = operator.writes_by_kind()
    time.sleep(15)
    assert operator.writes_by_kind() == before


def test_random_spec_edits_converge(converged: dict[str, float], kubectl: Any) -> None:
    rng = random.Random(13)
    for i in range(10):
        name = f"{PREFIX}-{rng.randrange(COUNT):04d}"
        patch = {"spec": {"branding": {"title": f"edit {i}"},
                          "storefront": {"replicas": rng.choice([1, 2])}}}
        kubectl("patch", "subsite", name, "--type=merge", "-p", json.dumps(patch))
    _wait(lambda: _converged(kubectl), 300, "edited SubSites Ready at their generation")


def test_kopf_writes_only_its_finalizer(converged: dict[str, float], kubectl: Any) -> None:
    """kopf's diff base was a second PATCH of every new SubSite (and a copy of its spec in
    an annotation); the finalizer is the only bookkeeping left."""
    for o in _subsites(kubectl):
        annotations = o["metadata"].get("annotations") or {}
        assert "kameng.io/last-handled-configuration" not in annotations, o["metadata"]["name"]
        assert "kameng.io/reclaim" in o["metadata"].get("finalizers", [])


def test_a_site_applied_before_its_license_is_built_once(operator: OperatorProcess,
                                                         kubectl: Any) -> None:
    """GitOps applies a SubSite and its License together, in no fixed order. A SubSite
    whose License arrives a moment later is built once, licensed (before: built
    unlicensed, a LicenseValid Warning, then rebuilt — a second rollout of the
    Deployment), and a new License's first Active state posts no Event."""
    prefix = "it-scalelate"
    rp, lic, ss = batch_objects(prefix, 1)
    name = ss["metadata"]["name"]

    def warnings_and_license_events() -> list[tuple[str, str, str]]:
        # By uid, not name: Events outlive their objects (an hour), so a run before this
        # one on the same cluster left a LicenseTerminated Event under the same name.
        uids = {json.loads(kubectl("get", kind, name, "-o", "json").stdout)["metadata"]["uid"]
                for kind in ("subsite", "license")}
        items = json.loads(kubectl("get", "events", "-n", "default", "-o", "json").stdout)
        return [(e["involvedObject"].get("kind"), e["type"], e["reason"])
                for e in items["items"] if e["involvedObject"].get("uid") in uids
                and (e["type"] == "Warning" or e["involvedObject"].get("kind") == "License")]

    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([rp, ss]))
        time.sleep(1.0)
        kubectl("apply", "-f", "-", input=yaml.safe_dump(lic))
        _wait(lambda: (json.loads(kubectl("get", "subsite", name, "-o", "json").stdout)
                       .get("status") or {}).get("phase") == "Ready", 120, f"{name} Ready")
        dep = json.loads(kubectl("get", "deployment", "storefront", "-n",
                                 namespace_name(name), "-o", "json").stdout)
        assert dep["metadata"]["generation"] == 1, "the Deployment was rolled out twice"
        assert warnings_and_license_events() == []
    finally:
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true",
                "--timeout=120s", timeout=150)
        kubectl("delete", "license", name, "--ignore-not-found")
        kubectl("delete", "rolepolicy", rp["metadata"]["name"], "--ignore-not-found")


def _metric(operator: OperatorProcess, name: str) -> float:
    return sum(float(v) for v in re.findall(rf'^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$',
                                            operator.metrics(), re.M))


def test_wakes_of_a_provisioned_site_do_not_recheck_its_database(
        converged: dict[str, float], operator: OperatorProcess, kubectl: Any) -> None:
    """Every event of every child wakes its site; a site whose PostgreSQL role/database
    and Redis user were provisioned with the same inputs is not checked again until the
    resync period (before: a PostgreSQL session and several statements per wake — at
    1,000 sites the reconciles queued behind them)."""
    checks0 = _metric(operator, "kameng_backend_checks_total")
    reconciles0 = _metric(operator, "kameng_reconciles_total")
    for i in range(3):
        ns = namespace_name(f"{PREFIX}-{i:04d}")
        for n in range(2):  # a label nobody manages: a child event, nothing to apply
            kubectl("label", "configmap", "storefront-config", "-n", ns,
                    f"it-scale-touch={n}", "--overwrite")
    _wait(lambda: _metric(operator, "kameng_reconciles_total") >= reconciles0 + 3, 30,
          "the touched sites reconciled")
    time.sleep(1)
    assert _metric(operator, "kameng_backend_checks_total") == checks0


def _rolled_out(kubectl: Any, sites: list[str]) -> bool:
    """Each site's Deployment finished its rollout: every replica updated and available,
    nothing of an older ReplicaSet left."""
    for site in sites:
        dep = json.loads(kubectl("get", "deployment", "storefront", "-n",
                                 namespace_name(site), "-o", "json").stdout)
        st, want = dep.get("status") or {}, dep["spec"].get("replicas", 1)
        if st.get("observedGeneration") != dep["metadata"]["generation"] or not (
                st.get("replicas") == st.get("updatedReplicas") == st.get("readyReplicas")
                == st.get("availableReplicas") == want) or st.get("terminatingReplicas"):
            return False
    return True


def _wakes(operator: OperatorProcess) -> dict[str, float]:
    return {cause: float(n) for cause, n in re.findall(
        r'^kameng_wakes_total\{cause="(\w+)"\} ([0-9.e+]+)$', operator.metrics(), re.M)}


def _stable(operator: OperatorProcess, seconds: float = 3.0) -> bool:
    """No write and no reconcile for ``seconds``: a reconcile that writes nothing (a
    child's status moved) still counts."""
    def seen() -> tuple[dict[str, float], float]:
        return operator.writes_by_kind(), _metric(operator, "kameng_reconciles_total")
    before = seen()
    time.sleep(seconds)
    return seen() == before


def test_a_license_time_step_writes_its_status_and_wakes_no_site(
        converged: dict[str, float], operator: OperatorProcess, kubectl: Any) -> None:
    """The "time left" column of a License steps by time alone (at midnight, for a fleet
    of Licenses ending on the same day: once each, at the same instant). Its status is
    written once per step; its sites read nothing of the status, so none is reconciled
    (before: every status echo woke every site of the License)."""
    names = [f"{PREFIX}-{i:04d}" for i in (1, 2, 3)]
    # Eight minutes left: the text steps every minute ("8m", "7m", ...), so a step
    # comes within a minute of any moment; no notices (they would write too).
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8 * 60))
    for name in names:
        kubectl("patch", "license", name, "--type=merge", "-p", json.dumps(
            {"spec": {"term": {"end": end}, "notices": {"before": []}}}))

    def left() -> dict[str, str]:
        items = json.loads(kubectl("get", "licenses", *names, "-o", "json").stdout)["items"]
        return {o["metadata"]["name"]: (o.get("status") or {}).get("expiresIn", "")
                for o in items}

    _wait(lambda: _converged(kubectl) and all(v.endswith("m") for v in left().values()),
          300, "the renewed Licenses' sites converged")
    # The renewal settles first: its writes (Secrets, statuses, Events), and the rollout
    # its new key starts (a pod template checksum), whose Deployment status changes wake
    # the sites without any write: on a loaded CI machine kwok's pods came up slowly and
    # 12 such reconciles landed in the window when only writes were awaited.
    _wait(lambda: _rolled_out(kubectl, names) and _stable(operator, 5.0), 180,
          "the renewal's writes and rollouts settled")
    while True:  # a baseline not straddling a step
        texts0 = left()
        reconciles0 = _metric(operator, "kameng_reconciles_total")
        wakes0 = _wakes(operator)
        writes0 = operator.writes_by_kind()
        if left() == texts0:
            break
    _wait(lambda: all(v != texts0[k] for k, v in left().items()), 120,
          "the next minute step of every License")
    time.sleep(3)  # any wake-up it caused would have reconciled by now
    writes = operator.writes_by_kind()
    wakes = {k: n - wakes0.get(k, 0.0) for k, n in _wakes(operator).items()
             if n != wakes0.get(k, 0.0)}
    # The claim, by cause: nothing the License (or any resource) did woke a site. Child
    # events may still arrive (kwok's pods of the renewal's rollout, the PDBs' status
    # following them: CI saw 12 in the window) and each may reconcile, writing nothing.
    assert not {"license", "rolepolicy", "subsite", "domain"} & set(wakes), wakes
    assert _metric(operator, "kameng_reconciles_total") - reconciles0 <= \
        wakes.get("child", 0.0) + wakes.get("timer", 0.0), wakes
    assert {k: writes.get(k, 0.0) - v for k, v in writes0.items()
            if writes.get(k, 0.0) != v} == {"License": len(names)}
