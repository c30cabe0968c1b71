"""The operator's memory does not grow with objects it does not own: its children are
watched with a server-side label selector, so unrelated Secrets and ConfigMaps never
reach the process (kopf's ``labels=`` filter received and parsed every one of them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.operator import OperatorProcess

NAMESPACE = "it-unrelated"
COUNT = 48
# Just under the 1 MiB object limit: 48 of them are ~45 MiB of someone else's data.
PAYLOAD = "x" * 900_000
ALLOWED_GROWTH = 20 * 1024 * 1024


def _peak_after_start(devenv: dict[str, str], log: Any) -> int:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         log).start()
    try:
        time.sleep(12)  # every watch listed
        assert op.alive()
        return op.rss_bytes()
    finally:
        op.stop()


@pytest.fixture
def unrelated(kubectl: Any) -> Iterator[None]:
    kubectl("create", "namespace", NAMESPACE, check=False)
    try:
        for i in range(COUNT):
            kind = "configmap" if i % 2 else "secret"
            doc = {"apiVersion": "v1", "kind": "ConfigMap" if i % 2 else "Secret",
                   "metadata": {"name": f"blob-{i}", "namespace": NAMESPACE}}
            doc["data" if kind == "configmap" else "stringData"] = {"blob": PAYLOAD}
            kubectl("create", "-f", "-", input=json.dumps(doc), check=False)
        yield
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_memory_is_flat_in_unrelated_objects(devenv: dict[str, str], kubectl: Any,
                                             tmp_path: Any, request: Any) -> None:
    baseline = _peak_after_start(devenv, tmp_path / "baseline.log")
    request.getfixturevalue("unrelated")
    crowded = _peak_after_start(devenv, tmp_path / "crowded.log")
    print(f"operator peak RSS: {baseline / 2**20:.0f} MiB alone, "
          f"{crowded / 2**20:.0f} MiB next to {COUNT} unrelated ~0.9 MiB objects")
    assert crowded - baseline < ALLOWED_GROWTH
