"""Probes and metrics are never reachable through the public Ingress: on the real cluster
(the Service and Ingress the builders make, applied to the kube-apiserver) and on the real
app (the public port answers 404, the ops port serves them)."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest
import yaml

from kameng.api.subsite import SubSiteSpec
from kameng.children.context import SiteContext
from kameng.children.ingress import ingress
from kameng.children.workload import deployment, service
from tests.support.storefront import run_stack


@pytest.fixture
def namespace(kubectl):
    name = f"it-ops-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def test_cluster_ingress_never_routes_to_the_ops_port(kubectl, namespace):
    spec = SubSiteSpec.model_validate({
        "displayName": "D", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "x", "domain": "ops.shop.example"})
    ctx = SiteContext(name=namespace.removeprefix("kameng-"), uid="u", spec=spec)
    objs = [deployment(ctx, "c"), service(ctx), ingress(ctx)]
    for o in objs:
        o["metadata"]["namespace"] = namespace
    kubectl("apply", "--server-side", "--field-manager=test", "-f", "-",
            input=yaml.safe_dump_all(objs))
    svc = json.loads(kubectl("get", "service", "storefront", "-n", namespace,
                             "-o", "json").stdout)
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"http", "ops"}
    assert ports["ops"]["targetPort"] == "ops"
    ing = json.loads(kubectl("get", "ingress", "storefront", "-n", namespace,
                             "-o", "json").stdout)
    routed = {p["backend"]["service"]["port"].get("name")
              for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    assert routed == {"http"}
    dep = json.loads(kubectl("get", "deployment", "storefront", "-n", namespace,
                             "-o", "json").stdout)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    # The Service's http port leads to the container's http port, which is not the ops one.
    assert named["http"] != named["ops"]
    assert c["readinessProbe"]["httpGet"]["port"] == "ops"
    assert c["livenessProbe"]["httpGet"]["port"] == "ops"


def test_public_app_does_not_serve_probes_or_metrics(pg_admin_dsn, redis_url, tmp_path):
    with run_stack(pg_admin_dsn, redis_url, tmp_path) as st:
        for public, ops in ((st.hq_url, st.hq_ops_url), (st.shop_url, st.shop_ops_url)):
            for path in ("/healthz", "/readyz", "/metrics"):
                assert httpx.get(f"{public}{path}").status_code == 404, (public, path)
                assert httpx.get(f"{ops}{path}").status_code == 200, (ops, path)
