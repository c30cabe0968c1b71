"""Renewal from HQ's back office on the dev environment: HQ patches the License with its
own ServiceAccount (ClusterRole kameng-hq-renewals: patch on licenses, nothing else),
the new term comes from the License's strategy, the renewal invoice lands in the ledger
once, and a second submit or another site's License changes nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.storefront import HQ_ADMIN, csrf_from, run_stack, staff_client

from .test_operator_rbac import sa_kubeconfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LIC, OTHER = "it-renew", "it-renew-b"


def _rfc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _license(name: str, end: datetime, strategy: str = "FromExpiry") -> dict[str, Any]:
    return {"apiVersion": "kameng.io/v1alpha1", "kind": "License",
            "metadata": {"name": name},
            "spec": {"subSite": name, "plan": "basic", "categories": ["game"],
                     "term": {"start": _rfc(end - timedelta(days=360)), "end": _rfc(end)},
                     "renewal": {"strategy": strategy},
                     "fees": {"currency": "CNY", "baseAnnualFee": "3650.00"}}}


# A ServiceAccount of its own (the chart's one value hqServiceAccount): HQ's real account
# also holds the onboarding, approvals and plans roles, which other tests bind; this one
# holds the renewal role alone, so what it may do is what that role allows.
SA = "it-hq-renewals"


def _hq_rbac(devenv: dict[str, str]) -> list[dict[str, Any]]:
    """HQ's renewal role as the chart renders it, bound to :data:`SA`."""
    out = subprocess.run(
        [str(Path(devenv["bin_dir"]) / "helm"), "template", "kameng", str(ROOT / "charts/kameng"),
         "--namespace", "kameng-system", "--set", f"hqServiceAccount={SA}",
         "--show-only", "templates/hq-renewals-rbac.yaml"],
        capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def env(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("renew")
    rbac = _hq_rbac(devenv)
    assert {d["kind"] for d in rbac} == {"ClusterRole", "ClusterRoleBinding"}
    kubectl("apply", "-f", str(ROOT / "manifests" / "operator" / "namespace.yaml"))
    kubectl("create", "serviceaccount", SA, "-n", "kameng-system", check=False)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    kubeconfig = sa_kubeconfig(kubectl, devenv["kubeconfig"], tmp / "hq.kubeconfig",
                               account=SA)
    now = datetime.now(UTC).replace(microsecond=0)
    kubectl("delete", "license", LIC, OTHER, "--ignore-not-found")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [_license(LIC, now + timedelta(days=5)),
         _license(OTHER, now - timedelta(days=20), "FromNowIfExpired")]))
    with run_stack(devenv["pg_admin_dsn"], devenv["redis_url"], tmp,
                   hq_overrides={"renewals_enabled": True,
                                 "kubeconfig": kubeconfig}) as st:
        yield {"stack": st, "kubeconfig": kubeconfig, "now": now}
    kubectl("delete", "license", LIC, OTHER, "--ignore-not-found")
    # Cluster-wide objects the chart owns: left behind, a later `helm install` refuses them.
    kubectl("delete", "clusterrolebinding,clusterrole", "kameng-hq-renewals",
            "--ignore-not-found")
    kubectl("delete", "serviceaccount", SA, "-n", "kameng-system", "--ignore-not-found")


def _end(kubectl: Any, name: str) -> str:
    return json.loads(kubectl("get", "license", name, "-o", "json").stdout)["spec"]["term"]["end"]


def _invoices(dsn: str, name: str) -> list[tuple[str, int, str]]:
    with psycopg.connect(dsn) as conn:
        return [(r[0], int(r[1]), r[2]) for r in conn.execute(
            "SELECT key, amount, kind FROM ledger.entries WHERE key LIKE %s ORDER BY key",
            (f"renewal:{name}:%",)).fetchall()]


def test_hq_role_may_only_patch_licenses(env: dict[str, Any], kubectl: Any) -> None:
    def can(*args: str) -> bool:
        out = kubectl("--kubeconfig", env["kubeconfig"], "auth", "can-i", *args, check=False)
        return out.stdout.strip() == "yes"
    assert can("patch", "licenses.kameng.io")
    for verb, res in (("get", "licenses.kameng.io"), ("list", "licenses.kameng.io"),
                      ("update", "licenses.kameng.io"), ("delete", "licenses.kameng.io"),
                      ("patch", "subsites.kameng.io"), ("get", "secrets")):
        assert not can(verb, res), f"{verb} {res}"


def test_renewal_from_the_back_office_extends_and_invoices_once(env: dict[str, Any],
                                                                 kubectl: Any) -> None:
    st, now = env["stack"], env["now"]
    hq = staff_client(st.hq_url, HQ_ADMIN)
    page = hq.get("/admin/renewals", params={"site": LIC, "extend": "240h"})
    assert page.status_code == 200, page.text
    old_end, new_end = now + timedelta(days=5), now + timedelta(days=15)
    assert f"{_rfc(old_end - timedelta(days=360))} → {_rfc(new_end)}" in page.text
    assert 'id="preview-invoice">100.00 CNY' in page.text  # 10 days of 3650.00 a year
    form = {"csrf": csrf_from(page.text), "site": LIC, "license": LIC, "extend": "240h",
            "from_end": _rfc(old_end)}
    done = hq.post("/admin/renewals", data=form)
    assert done.status_code == 200, done.text
    assert f'data-end="{_rfc(new_end)}"' in done.text
    assert _end(kubectl, LIC) == _rfc(new_end)
    assert _invoices(st.hq_dsn, LIC) == [
        (f"renewal:{LIC}:{_rfc(old_end)}:{_rfc(new_end)}", 10000, "invoice")]
    with psycopg.connect(st.hq_dsn) as conn:  # the ledger still balances
        assert conn.execute("SELECT coalesce(sum(balance), 0) FROM ledger.accounts"
                            ).fetchone()[0] == 0

    # The same form again (a double click, a reload): refused, nothing changes.
    again = hq.post("/admin/renewals", data=form)
    assert again.status_code == 409
    assert 'data-code="renewal_stale"' in again.text
    assert _end(kubectl, LIC) == _rfc(new_end)
    assert len(_invoices(st.hq_dsn, LIC)) == 1


def test_an_expired_license_restarts_from_now_by_its_strategy(env: dict[str, Any],
                                                                kubectl: Any) -> None:
    st = env["stack"]
    hq = staff_client(st.hq_url, HQ_ADMIN)
    page = hq.get("/admin/renewals", params={"site": OTHER, "extend": "8760h"})
    assert page.status_code == 200, page.text
    assert 'id="preview-invoice">3650.00 CNY' in page.text  # the whole new year, not the lapse
    old_end = _end(kubectl, OTHER)
    before = datetime.now(UTC)
    r = hq.post("/admin/renewals", data={"csrf": csrf_from(page.text), "site": OTHER,
                                          "license": OTHER, "extend": "8760h",
                                          "from_end": old_end})
    assert r.status_code == 200, r.text
    lic = json.loads(kubectl("get", "license", OTHER, "-o", "json").stdout)["spec"]["term"]
    start = datetime.fromisoformat(lic["start"].replace("Z", "+00:00"))
    assert abs((start - before).total_seconds()) < 5
    assert [a for _, a, _ in _invoices(st.hq_dsn, OTHER)] == [365000]


def test_another_sites_license_is_refused(env: dict[str, Any], kubectl: Any) -> None:
    st = env["stack"]
    hq = staff_client(st.hq_url, HQ_ADMIN)
    end = _end(kubectl, LIC)
    r = hq.get("/admin/renewals", params={"site": OTHER, "license": LIC, "extend": "240h"})
    assert r.status_code == 400
    assert 'data-code="renewal_not_found"' in r.text
    assert _end(kubectl, LIC) == end
