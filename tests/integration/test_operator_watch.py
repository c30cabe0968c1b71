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


async def test_watch_sees_only_selected_objects_and_catches_up_after_a_gap(
        devenv: dict[str, str], kubectl: Any) -> None:
    """`kube/watch.py` on the real API server: only labelled objects arrive; changes made
    while no watch was open are reported by the next listing."""
    import asyncio

    from kameng.kube.client import Kube, path_for
    from kameng.kube.watch import Watcher

    ns = "it-watch"
    kubectl("create", "namespace", ns, check=False)
    kube = Kube.from_environment(devenv["kubeconfig"])
    seen: list[tuple[str | None, str]] = []
    w = Watcher(kube, "v1", "ConfigMap", path_for("v1", "ConfigMap", namespace=ns),
                "it-watch=yes", lambda t, o: seen.append((t, o["metadata"]["name"])))

    def cm(name: str, labelled: bool, value: str = "1") -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": value},
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"it-watch": "yes"} if labelled else {}}}

    try:
        for name in ("a", "gone", "changed"):
            await kube.create(path_for("v1", "ConfigMap", namespace=ns), cm(name, True))
        version = await w.relist()
        assert sorted(seen) == [(None, "a"), (None, "changed"), (None, "gone")]
        seen.clear()
        task = asyncio.create_task(w.watch_from(version))
        await kube.create(path_for("v1", "ConfigMap", namespace=ns), cm("other", False))
        await kube.create(path_for("v1", "ConfigMap", namespace=ns), cm("b", True))
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.1)
        task.cancel()
        assert seen == [("ADDED", "b")]
        seen.clear()
        # A gap: changes while no watch is open.
        await kube.delete(path_for("v1", "ConfigMap", "gone", ns), kind="ConfigMap")
        await kube.apply(cm("changed", True, "2"))
        await w.relist()
        assert sorted(t for t in seen if t[0] is not None) == [
            ("DELETED", "gone"), ("MODIFIED", "changed")]
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
        await kube.close()
