"""The Helm chart lints, rejects bad values by its schema, renders objects the real API
server accepts, and installs an operator that becomes Available."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kameng"
NS = f"kameng-chart-{uuid.uuid4().hex[:6]}"
K8S_VERSION = next(line.split("=", 1)[1].strip() for line in
                   (ROOT / "hack" / "versions.env").read_text().splitlines()
                   if line.startswith("K8S_VERSION="))


@pytest.fixture(scope="module")
def helm(devenv):
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": devenv["kubeconfig"],
               "HELM_CACHE_HOME": f"{devenv['state_dir']}/helm/cache",
               "HELM_CONFIG_HOME": f"{devenv['state_dir']}/helm/config",
               "HELM_DATA_HOME": f"{devenv['state_dir']}/helm/data"}
        if args[0] == "template":
            # Client-side rendering knows no cluster; say which one we target.
            args = (*args, "--kube-version", K8S_VERSION)
        proc = subprocess.run([str(Path(devenv["bin_dir"]) / "helm"), *args], env=env,
                              capture_output=True, text=True, timeout=180, check=False)
        if check and proc.returncode:
            raise AssertionError(f"helm {' '.join(args)}:\n{proc.stderr}{proc.stdout}")
        return proc
    return run


def test_chart_lints(helm):
    out = helm("lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(("values", "complaint"), [
    (["--set", "replicas=0"], "replicas"),
    (["--set", "operator.hqUrl=ftp://hq"], "hqUrl"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "unknownKey=1"], "unknownKey"),
])
def test_values_schema_rejects_bad_values(helm, values, complaint):
    proc = helm("template", "x", str(CHART), *values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert complaint in proc.stderr


def test_rendered_objects_are_accepted_by_the_api_server(helm, kubectl):
    rendered = helm("template", "kameng", str(CHART), "--namespace", "default",
                    "--set", "replicas=2").stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Service",
            "PodDisruptionBudget", "RolePolicy"} <= set(kinds)
    res = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert res.stdout.count("(server dry run)") == len(kinds)


def test_chart_standard_policy_equals_the_shipped_one(helm):
    rendered = helm("template", "k", str(CHART), "--show-only",
                    "templates/rolepolicy-standard.yaml").stdout
    chart_spec = yaml.safe_load(rendered)["spec"]
    sample = yaml.safe_load((ROOT / "manifests/samples/rolepolicy-standard.yaml").read_text())
    assert chart_spec == sample["spec"]


def test_install_runs_a_restricted_operator(helm, kubectl):
    kubectl("create", "namespace", NS, check=False)
    kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted",
            "--overwrite")
    kubectl("create", "secret", "generic", "kameng-backing-services", "-n", NS,
            "--from-literal=pgAdminDsn=postgresql://unused", "--from-literal=redisUrl=redis://x",
            check=False)
    settings = ("--set", "standardRolePolicy=false", "--set", "risk.defaultPolicy=false")
    # Cluster-scoped objects of the same names left by an earlier test that applied the
    # rendered manifests (or by an earlier run on a reused cluster) would make helm refuse
    # to adopt them: remove them first, the release then owns what it creates.
    rendered = helm("template", "kameng-it", str(CHART), "--namespace", NS, "--skip-crds",
                    *settings).stdout
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kubectl("delete", doc["kind"], doc["metadata"]["name"], "--ignore-not-found")
    try:
        helm("install", "kameng-it", str(CHART), "--namespace", NS, "--skip-crds",
             *settings, "--wait", "--timeout", "90s")
        kubectl("wait", "-n", NS, "--for=condition=Available", "deployment/kameng-operator",
                "--timeout=60s", timeout=70)
        pod = json.loads(kubectl("get", "pods", "-n", NS, "-l",
                                 "app.kubernetes.io/component=operator", "-o", "json")
                         .stdout)["items"][0]
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "--peering=kameng" in container["args"]  # peering is on by default
        # Credentials are referenced, never inlined.
        env = {e["name"]: e for e in container["env"]}
        assert "value" not in env["KAMENG_PG_ADMIN_DSN"]
    finally:
        helm("uninstall", "kameng-it", "--namespace", NS, "--wait", check=False)
        kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_kustomize_base_is_the_rendered_chart(helm, kubectl):
    committed = (ROOT / "manifests" / "operator" / "kameng.yaml").read_text()
    fresh = helm("template", "kameng", str(CHART), "--namespace", "kameng-system",
                 "--skip-crds", "--set", "standardRolePolicy=false").stdout
    assert committed.split("\n", 1)[1] == fresh, "stale: run `make manifests`"
    built = kubectl("kustomize", str(ROOT / "manifests" / "operator")).stdout
    assert "kind: ClusterRole" in built
    assert "name: kameng-system" in built


def test_defaults_are_highly_available(helm):
    """Out of the box: two operators in one peering (one acts, the other takes over within
    the peering lifetime), two replicas of each worker, each component's replicas on
    different nodes when the cluster has them, and a drain that takes one at a time."""
    docs = [d for d in yaml.safe_load_all(helm("template", "k", str(CHART), "--namespace",
                                               "ns").stdout) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in ("operator", "risk", "settlement"):
        dep = deployments[f"kameng-{component}"]
        assert dep["spec"]["replicas"] >= 2, component
        labels = dep["spec"]["template"]["metadata"]["labels"]
        term = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"].items() <= labels.items()
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        pdb = pdbs[f"kameng-{component}"]["spec"]
        assert pdb["maxUnavailable"] == 1
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
    args = deployments["kameng-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=kameng" in args
    assert f"--peering-lifetime={values['operator']['peeringLifetime']}" in args
    # One operator: replaced, never doubled, and no budget that would block every drain.
    single = [d for d in yaml.safe_load_all(helm(
        "template", "k", str(CHART), "--namespace", "ns", "--set", "replicas=1").stdout) if d]
    op = next(d for d in single if d["metadata"]["name"] == "kameng-operator"
              and d["kind"] == "Deployment")
    assert op["spec"]["strategy"] == {"type": "Recreate"}
    assert "kameng-operator" not in {d["metadata"]["name"] for d in single
                                     if d["kind"] == "PodDisruptionBudget"}
    # A user's own affinity replaces the default.
    custom = helm("template", "k", str(CHART), "--namespace", "ns", "--set",
                  "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                  ".nodeSelectorTerms[0].matchExpressions[0].key=pool", "--set",
                  "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                  ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists").stdout
    op = next(d for d in yaml.safe_load_all(custom) if d and d["kind"] == "Deployment"
              and d["metadata"]["name"] == "kameng-operator")
    assert set(op["spec"]["template"]["spec"]["affinity"]) == {"nodeAffinity"}


def test_hq_component_follows_the_pod_contract(helm, kubectl):
    """HQ from the chart (hq.enabled) reads what the storefront reads: its secrets by the
    contract's env names and mount paths, the registry the operator writes, never the
    license-signing key; the API server accepts it; the sites reach it at the default
    operator.hqUrl; the HQ ServiceMonitor's default selector finds its Service."""
    from kameng.cli.operator_cmd import add_arguments
    from kameng.contracts import pod
    from kameng.contracts.hq_auth import REGISTRY_MOUNT, REGISTRY_SECRET

    rendered = helm("template", "kameng", str(CHART), "--namespace", "default",
                    "--set", "hq.enabled=true", "--set", "hq.ingress.host=hq.example.com",
                    "--set", "metrics.hq.enabled=true",
                    "--set", "metrics.serviceMonitor.enabled=true").stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    hq = {(d["kind"], d["metadata"]["name"]): d for d in docs
          if d["metadata"]["name"] == "kameng-hq"}
    assert {"Deployment", "Service", "Ingress", "PodDisruptionBudget"} <= {k for k, _ in hq}
    spec = hq["Deployment", "kameng-hq"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for key in (pod.DB_DSN, pod.REDIS_URL, pod.SESSION_SECRET, pod.DATA_KEYS,
                pod.ADMIN_PASSWORD):
        assert "hq" in key.modes
        assert "secretKeyRef" in env[key.env]["valueFrom"], key.env  # never inlined
    assert env["KAMENG_SANDBOX_PAYMENTS"]["value"] == "disabled"
    assert "--mode=hq" in container["args"]
    # The shops' pay links point where HQ says it is served: one value for both.
    operator = next(d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == "kameng-operator")
    public = env["KAMENG_PUBLIC_URL"]["value"]
    assert f"--hq-public-url={public}" in operator["spec"]["template"]["spec"][
        "containers"][0]["args"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([f"--hq-public-url={public}"]).hq_public_url == public
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    keys = volumes["hq-keys"]["secret"]
    assert keys["secretName"] == pod.HQ_KEYS_SECRET
    assert mounts["hq-keys"] == pod.mount_path(pod.HQ_KEYS_SECRET)
    assert {i["key"] for i in keys["items"]} == {pod.HQ_PUBLIC_KEY.key,
                                                  pod.HQ_MASTER_SECRET.key}
    assert pod.HQ_SIGNING_KEY.key not in {i["key"] for i in keys["items"]}
    assert volumes["site-credentials"]["secret"]["secretName"] == REGISTRY_SECRET
    assert mounts["site-credentials"] == pod.mount_path(REGISTRY_MOUNT)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["serviceAccountName"] == yaml.safe_load(
        (CHART / "values.yaml").read_text())["hqServiceAccount"]
    service = hq["Service", "kameng-hq"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["hqUrl"] == "http://kameng-hq.kameng-system.svc"
    assert {"port": 80, "targetPort": "http"}.items() <= service["spec"]["ports"][0].items()
    assert service["spec"]["selector"].items() <= \
        hq["Deployment", "kameng-hq"]["spec"]["template"]["metadata"]["labels"].items()
    monitor = hq["ServiceMonitor", "kameng-hq"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    # The API server accepts every HQ object (ServiceMonitor: no CRD in this cluster).
    accepted = [d for d in docs if d["metadata"]["name"] == "kameng-hq"
                and d["kind"] != "ServiceMonitor"]
    res = kubectl("apply", "--dry-run=server", "-f", "-",
                  input="\n---\n".join(yaml.safe_dump(d) for d in accepted))
    assert res.stdout.count("(server dry run)") == len(accepted)
    # Off by default: no HQ unless asked.
    default = helm("template", "kameng", str(CHART), "--namespace", "kameng-system").stdout
    assert not [d for d in yaml.safe_load_all(default) if d and d["kind"] == "Deployment"
                and d["metadata"]["name"] == "kameng-hq"]
