"""The dev environment is a working cluster: API, scheduling onto kwok nodes,
controllers (ReplicaSets, ServiceAccounts, garbage collection, namespace deletion)
and Pod Security admission."""

from __future__ import annotations

import json
import time
import uuid

import pytest


@pytest.fixture
def namespace(kubectl):
    name = f"it-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_apiserver_ready(kubectl):
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]


def test_kwok_nodes_are_ready(kubectl):
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = [n["metadata"]["name"] for n in nodes
             if any(c["type"] == "Ready" and c["status"] == "True"
                    for c in n["status"]["conditions"])]
    assert len(ready) >= 1


def test_deployment_becomes_available_on_a_kwok_node(kubectl, namespace):
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(deploy))
    kubectl("wait", "-n", namespace, "--for=condition=Available", "deployment/web",
            "--timeout=60s", timeout=70)
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert pod["status"]["phase"] == "Running"
    # The ServiceAccount controller (controller-manager) made the default account.
    kubectl("get", "serviceaccount", "default", "-n", namespace)


def test_namespace_deletion_completes(kubectl):
    name = f"it-del-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    kubectl("create", "configmap", "c", "-n", name, "--from-literal=k=v")
    kubectl("create", "deployment", "d", "-n", name, "--image=nginx:1.27")
    kubectl("delete", "namespace", name, "--timeout=60s", timeout=70)
    proc = kubectl("get", "namespace", name, check=False)
    assert proc.returncode != 0
    assert "NotFound" in proc.stderr


def test_garbage_collection_follows_owner_references(kubectl, namespace):
    owner = json.loads(kubectl("create", "configmap", "owner", "-n", namespace,
                               "-o", "json").stdout)
    child = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "child", "namespace": namespace,
                          "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                               "name": "owner",
                                               "uid": owner["metadata"]["uid"]}]}}
    kubectl("apply", "-f", "-", input=json.dumps(child))
    kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if kubectl("get", "configmap", "child", "-n", namespace, check=False).returncode:
            return
        time.sleep(0.5)
    pytest.fail("garbage collector did not delete the dependent ConfigMap")


def test_restricted_pod_security_is_enforced(kubectl, namespace):
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    # An ordinary pod without the restricted securityContext: allowed by the API,
    # refused by Pod Security admission.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    proc = kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0
    assert "violates PodSecurity" in proc.stderr
    assert "restricted" in proc.stderr
    assert "runAsNonRoot" in proc.stderr
