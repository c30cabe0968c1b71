"""A PostgreSQL server entry that names a CloudNativePG Cluster is resolved through the
API server by CNPG's conventions (``<cluster>-rw`` Service, the superuser Secret). CNPG
itself does not run here: the Cluster is a custom resource instance like any other."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from kameng.kube.client import Kube
from kameng.provision.placement import ServerInfo
from kameng.provision.servers import CnpgRef, ServerConfigError, ServerEntry, resolve

NS = "it-cnpg"
# The Cluster CRD's identity as CNPG's release manifests define it (group, names, scope,
# served version); the schema is left open: only what the operator reads matters here.
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusters.postgresql.cnpg.io"},
    "spec": {"group": "postgresql.cnpg.io", "scope": "Namespaced",
             "names": {"kind": "Cluster", "listKind": "ClusterList", "plural": "clusters",
                       "singular": "cluster"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


@pytest.fixture
def cnpg(kubectl: Any) -> Iterator[None]:
    kubectl("apply", "-f", "-", input=json.dumps(CRD))
    kubectl("wait", "--for=condition=Established", "crd/clusters.postgresql.cnpg.io",
            "--timeout=60s")
    kubectl("create", "namespace", NS, check=False)
    try:
        yield
    finally:
        # Gone before the next run: a namespace still terminating refuses the Cluster,
        # and the CRD is cluster-wide (each test removes what it created).
        kubectl("delete", "namespace", NS, "--ignore-not-found", "--timeout=120s",
                timeout=150, check=False)
        kubectl("delete", "crd", "clusters.postgresql.cnpg.io", "--ignore-not-found",
                "--timeout=120s", timeout=150, check=False)


def _b64(v: str) -> str:
    return base64.b64encode(v.encode()).decode()


async def test_cnpg_cluster_resolved_through_the_api(devenv: dict[str, str], kubectl: Any,
                                                      cnpg: None) -> None:
    cluster = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
               "metadata": {"name": "shops", "namespace": NS},
               "spec": {"instances": 3, "enableSuperuserAccess": True,
                        "storage": {"size": "1Gi"}}}
    kubectl("apply", "-f", "-", input=json.dumps(cluster))
    entry = ServerEntry(ServerInfo("pg-cnpg", 100), cnpg=CnpgRef("shops", NS))
    kube = Kube.from_environment(devenv["kubeconfig"])
    try:
        # CNPG has not made the superuser Secret (yet): a clear refusal, not a crash.
        with pytest.raises(ServerConfigError, match="shops-superuser"):
            await resolve(kube, [entry])
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                  "metadata": {"name": "shops-superuser", "namespace": NS},
                  "data": {"username": _b64("postgres"), "password": _b64("pa:ss")}}
        kubectl("apply", "-f", "-", input=json.dumps(secret))
        [server] = await resolve(kube, [entry])
        assert server.name == "pg-cnpg"
        assert (server.site_host, server.site_port) == (f"shops-rw.{NS}.svc", 5432)
        assert server.admin_dsn.startswith(f"postgresql://postgres:pa%3Ass@shops-rw.{NS}.svc")
        assert "pa:ss" not in repr(server)
    finally:
        await kube.close()
