"""Every shipped sample (License + SubSite pair in manifests/samples) becomes Ready
within 10 s, under a test name so it never collides with a demo someone is running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from kameng.children.namespace import PLAN_QUOTAS
from tests.support.operator import OperatorProcess
from tests.support.wait import budget

from .test_operator_lifecycle import fresh_start, get

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
RP = "it-sample-rp"


def pairs() -> list[str]:
    return sorted(p.stem.removeprefix("subsite-") for p in SAMPLES.glob("subsite-*.yaml"))


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
             kubectl: Any) -> Iterator[OperatorProcess]:
    policy = yaml.safe_load((SAMPLES / "rolepolicy-standard.yaml").read_text())
    policy["metadata"]["name"] = RP
    kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    yield op
    op.stop()
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found")


@pytest.mark.parametrize("sample", pairs())
def test_sample_becomes_ready_within_10s(operator: OperatorProcess, kubectl: Any,
                                         pg_admin_dsn: str, sample: str) -> None:
    name = f"it-sample-{sample}"
    lic = yaml.safe_load((SAMPLES / f"license-{sample}.yaml").read_text())
    ss = yaml.safe_load((SAMPLES / f"subsite-{sample}.yaml").read_text())
    lic["metadata"]["name"] = lic["spec"]["subSite"] = name
    ss["metadata"]["name"] = ss["spec"]["licenseRef"] = name
    ss["spec"]["rolePolicyRef"] = RP
    ss["spec"]["domain"] = f"{name}.shop.example"
    try:
        fresh_start(kubectl, name)
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([lic, ss]))
        kubectl.wait_ready(f"subsite/{name}", 10)
        assert time.monotonic() - started < budget(10)
        ns = f"kameng-{name}"
        quota = get(kubectl, "resourcequota", "storefront-quota", "-n", ns)
        assert quota["spec"]["hard"] == PLAN_QUOTAS[lic["spec"]["plan"]]
        dep = get(kubectl, "deployment", "storefront", "-n", ns)
        assert dep["status"]["availableReplicas"] == ss["spec"]["storefront"]["replicas"]
        ing = get(kubectl, "ingress", "storefront", "-n", ns)
        tls = ss["spec"].get("tls") or {}
        if "clusterIssuer" in tls:
            annotations = ing["metadata"]["annotations"]
            assert annotations["cert-manager.io/cluster-issuer"] == tls["clusterIssuer"]
            assert ing["spec"]["tls"][0]["hosts"] == [f"{name}.shop.example"]
    finally:
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true",
                "--timeout=60s", timeout=90)
        kubectl("delete", "license", name, "--ignore-not-found")
        kubectl("delete", "secret", f"kameng-keys-{name}", "-n", "kameng-system",
                "--ignore-not-found")
        ident = "kameng_" + name.replace("-", "_")
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:  # Retain leaves it
            conn.execute(f'DROP DATABASE IF EXISTS "{ident}"')
            conn.execute(f'DROP ROLE IF EXISTS "{ident}"')
