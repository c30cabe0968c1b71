"""The operator's client under the API server's own limit: API Priority and Fairness
rejects what exceeds a priority level's seats with 429 + Retry-After, and the client
waits and retries like client-go instead of failing the reconcile.

The limit is real: a FlowSchema puts a throwaway ServiceAccount on a PriorityLevel with
one concurrency share and no queues (``limitResponse: Reject``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from kameng.kube import client as kc
from kameng.kube.client import Kube

SA = "kameng-it-apf"
PL = "kameng-it-tiny"
CONCURRENT = 64


@pytest.fixture
def throttled_token(kubectl: Any) -> Iterator[str]:
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": SA, "namespace": "default"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": SA, "namespace": "default"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "view"},
         "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": "default"}]},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
         "metadata": {"name": PL},
         "spec": {"type": "Limited", "limited": {
             "nominalConcurrencyShares": 1, "lendablePercent": 0,
             "limitResponse": {"type": "Reject"}}}},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
         "metadata": {"name": PL},
         "spec": {"priorityLevelConfiguration": {"name": PL}, "matchingPrecedence": 100,
                  "distinguisherMethod": {"type": "ByUser"},
                  "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                      "name": SA, "namespace": "default"}}],
                      "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                         "resources": ["*"], "namespaces": ["*"],
                                         "clusterScope": True}]}]}},
    ]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                   "items": docs}))
    try:
        yield kubectl("create", "token", SA, "-n", "default").stdout.strip()
    finally:
        kubectl("delete", "flowschema", PL, "--ignore-not-found")
        kubectl("delete", "prioritylevelconfiguration", PL, "--ignore-not-found")
        kubectl("delete", "rolebinding,serviceaccount", SA, "-n", "default",
                "--ignore-not-found")


def _throttled() -> float:
    counter = getattr(kc, "API_THROTTLED", None)  # absent before the retry existed
    return 0.0 if counter is None else sum(
        m.value for metric in counter.collect() for m in metric.samples
        if m.name.endswith("_total"))


async def test_rejected_requests_are_retried_after_retry_after(
        devenv: dict[str, str], throttled_token: str) -> None:
    kube = Kube.from_environment(devenv["kubeconfig"])
    kube._auth = kc._Auth(token=throttled_token)  # the throttled identity
    before = _throttled()
    try:
        async def burst() -> list[Any]:
            return await asyncio.gather(*(
                kube.list("/api/v1/namespaces/default/configmaps")
                for _ in range(CONCURRENT)), return_exceptions=True)

        # APF computes the level's seats from its share; a burst larger than that is
        # rejected in part. A few rounds make sure the limit was actually met.
        for _ in range(5):
            results = await burst()
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, failures[:3]
            if _throttled() > before:
                break
        assert _throttled() > before, "the priority level never rejected anything"
    finally:
        await kube.close()
