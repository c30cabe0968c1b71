"""The chart's alert rules pass `promtool test rules` (cases in tests/unit/alerts/), every
alert has a test and a runbook section, and the Grafana dashboard ships as valid JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kameng"
CASES = Path(__file__).parent / "alerts" / "kameng_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def _render(devenv, *values: str) -> list[dict]:
    out = subprocess.run(
        [str(Path(devenv["bin_dir"]) / "helm"), "template", "kameng", str(CHART),
         "--namespace", "kameng-system", *values],
        capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def rendered(devenv) -> list[dict]:
    return _render(devenv, "--set", "metrics.prometheusRule.enabled=true",
                   "--set", "metrics.serviceMonitor.enabled=true",
                   "--set", "metrics.hq.enabled=true",
                   "--set", "metrics.grafanaDashboard.enabled=true")


@pytest.fixture(scope="module")
def rules_file(rendered, tmp_path_factory) -> Path:
    rule = next(d for d in rendered if d["kind"] == "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    return path


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: hack/system-deps installs it (Debian `prometheus`)"
    return found


def _alerts(rules_file: Path) -> set[str]:
    groups = yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def test_rules_are_valid(rules_file):
    proc = subprocess.run([_promtool(), "check", "rules", str(rules_file)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_pass(rules_file, tmp_path):
    cases = tmp_path / "kameng_test.yaml"
    cases.write_text(CASES.read_text(encoding="utf-8").replace("RULES_FILE", str(rules_file)),
                     encoding="utf-8")
    proc = subprocess.run([_promtool(), "test", "rules", str(cases)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_test_case_and_a_runbook(rules_file):
    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    fired = {t["alertname"] for c in cases["tests"] for t in c.get("alert_rule_test", [])
             if t.get("exp_alerts")}
    alerts = _alerts(rules_file)
    assert {"KamengStorefrontCPUHigh", "KamengStorefrontDatabaseTimeouts",
            "KamengStorefrontErrorBudgetBurn", "KamengStorefrontLatencySLO",
            "KamengTicketSlaBreached"} <= alerts
    assert alerts <= fired, f"alerts without a firing test: {alerts - fired}"
    headings = {m.lower() for m in re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(), re.M)}
    groups = yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]
    for g in groups:
        for r in g["rules"]:
            if "alert" in r:
                anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
                assert anchor == r["alert"].lower(), r["alert"]
                assert anchor in headings, r["alert"]


def test_storefronts_scraped_on_the_ops_port_with_the_site_label(rendered):
    pm = next(d for d in rendered if d["kind"] == "PodMonitor")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["port"] == "ops"
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_kameng_io_subsite"],
            "targetLabel": "site"} in ep["relabelings"]


def test_grafana_dashboard_configmap(rendered):
    cm = next(d for d in rendered if d["kind"] == "ConfigMap"
              and d["metadata"]["name"] == "kameng-grafana-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["kameng-kpis.json"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("kameng_kpi_gmv_yuan", "kameng_kpi_conversion_ratio",
                   "kameng_kpi_repeat_customer_ratio", "kameng_kpi_refund_ratio",
                   "kameng_kpi_complaint_ratio", "kameng_tickets_sla_breached"):
        assert metric in exprs


def test_prometheus_may_reach_the_ops_port_only():
    from kameng.api.subsite import SubSiteSpec
    from kameng.children.context import Platform, SiteContext
    from kameng.children.network import storefront_allow
    from kameng.contracts import pod

    spec = SubSiteSpec.model_validate({
        "displayName": "D", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "shop.partner.example"})

    def rules(platform: Platform) -> list[dict]:
        ctx = SiteContext(name="demo", uid="u", spec=spec, platform=platform)
        return storefront_allow(ctx)["spec"]["ingress"]

    assert len(rules(Platform())) == 1  # not configured: nobody but the ingress controller
    scrape = rules(Platform(monitoring_namespace="monitoring"))[1]
    assert scrape["ports"] == [{"protocol": "TCP", "port": pod.OPS_PORT.number}]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
