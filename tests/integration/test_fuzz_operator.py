"""A batch of generated objects on the real API server with the operator running: every
one the API server accepts gets a status, and bad ones (a License for another site,
absurd values: terms in 1970 or 9999, a grace period past year 9999, odd Unicode, longest
lists) never stop the good ones from becoming Ready."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.operator import OperatorProcess, drop_retained_data
from tests.support.strategies import license_spec, rfc3339, rolepolicy_spec, subsite_spec

PREFIX = f"fz{secrets.token_hex(2)}"


def _obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kameng.io/v1alpha1", "kind": kind, "metadata": {"name": name},
            "spec": spec}


@st.composite
def batch(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(objects, names of sites that must become Ready, names of all sites)."""
    rp = draw(rolepolicy_spec())
    roles = [r["name"] for r in rp["roles"]]
    objs = [_obj("RolePolicy", f"{PREFIX}-rp", rp)]
    good, sites = [], []
    now = datetime.now(UTC)
    for i in range(5):
        name = f"{PREFIX}-{i}"
        kind = ("good", "good", "other-site", "absurd", "absurd")[i]
        lic = draw(license_spec(site=name if kind != "other-site" else f"{PREFIX}-x"))
        if kind == "good":
            lic.update(suspended=False, term={"start": rfc3339(now - timedelta(days=1)),
                                              "end": rfc3339(now + timedelta(days=400))})
            lic.pop("suspendReason", None)
        elif kind == "absurd" and i == 3:  # a grace period past the end of the calendar
            lic.update(gracePeriod="999999999999999h",
                       term={"start": rfc3339(now - timedelta(days=1)),
                             "end": "9999-12-30T00:00:00Z"})
        elif kind == "absurd":  # a term long over, at the start of the epoch
            lic.update(term={"start": "1970-01-01T00:00:01Z", "end": "1970-01-01T00:00:02Z"})
        ss = draw(subsite_spec(license_ref=name, role_policy_ref=f"{PREFIX}-rp", roles=roles))
        ss["domain"] = f"{name}.shop.example"  # one domain per site
        if kind == "good":
            ss["storefront"] = {"replicas": 1}  # within every plan's quota
            good.append(name)
        objs += [_obj("License", name, lic), _obj("SubSite", name, ss)]
        sites.append(name)
    return objs, good, sites


@pytest.fixture(scope="module")
def operator(devenv, kubectl, tmp_path_factory):
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    yield op
    names = [f"{PREFIX}-{i}" for i in range(5)]
    kubectl("delete", "subsite", *names, "--ignore-not-found", "--wait=true", timeout=180)
    kubectl("delete", "license", *names, "--ignore-not-found")
    kubectl("delete", "rolepolicy", f"{PREFIX}-rp", "--ignore-not-found")
    op.stop()
    for name in names:  # generated sites may say reclaimPolicy: Retain
        drop_retained_data(devenv["pg_admin_dsn"], kubectl, name)


def _get(kubectl, kind: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-o", "json").stdout)


def test_generated_batch_every_object_gets_a_status(operator, kubectl):
    @settings(max_examples=1, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(batch())
    def run(generated):
        objs, good, sites = generated
        kubectl("apply", "--server-side", "--field-manager=fuzz", "-f", "-",
                input=yaml.safe_dump_all(objs, allow_unicode=True), timeout=60)
        deadline = time.monotonic() + 120
        pending = set(sites)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                ss = _get(kubectl, "subsite", name)
                st_ = ss.get("status") or {}
                conds = {c["type"] for c in st_.get("conditions", [])}
                ready = "Ready" in conds and st_.get("phase") == "Ready"
                if st_.get("phase") and "Ready" in conds and (name not in good or ready):
                    pending.discard(name)
            time.sleep(1)
        assert not pending, {n: _get(kubectl, "subsite", n).get("status") for n in pending}
        # The License for another site is named as such on the SubSite, not a crash.
        other = _get(kubectl, "subsite", sites[2])["status"]
        lv = next(c for c in other["conditions"] if c["type"] == "LicenseValid")
        assert (lv["status"], lv["reason"]) == ("False", "LicenseForOtherSite")
        # Every License has its status too, extremes included.
        for name in sites:
            lic = _get(kubectl, "license", name).get("status") or {}
            assert lic.get("conditions"), (name, lic)

    run()
