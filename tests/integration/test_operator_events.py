"""Events are aggregated like the kubelet's: a repeated Event bumps the count of the
existing object instead of creating another, and a flapping object is rate limited."""

from __future__ import annotations

import uuid
from typing import Any

from kameng.kube import events
from kameng.kube.client import Kube, path_for


def _ours(items: list[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    return [e for e in items if (e.get("involvedObject") or {}).get("uid") == uid]


async def test_repeated_event_bumps_count_on_one_object(devenv: dict[str, str]) -> None:
    kube = Kube.from_environment(devenv["kubeconfig"])
    uid = str(uuid.uuid4())
    obj = {"apiVersion": "kameng.io/v1alpha1", "kind": "SubSite",
           "metadata": {"name": f"ev-{uid[:8]}", "uid": uid}}
    try:
        for _ in range(3):
            await events.post(kube, obj, "Warning", "ReconcileError", "server unreachable")
        await events.post(kube, obj, "Normal", "PhaseReady", "Phase is now Ready")
        mine = _ours(await kube.list(path_for("v1", "Event", namespace="default")), uid)
        by_reason = {e["reason"]: e for e in mine}
        assert len(mine) == 2, [e["reason"] for e in mine]
        assert by_reason["ReconcileError"]["count"] == 3
        assert by_reason["PhaseReady"]["count"] == 1
    finally:
        await kube.close()


async def test_flapping_object_is_rate_limited(devenv: dict[str, str]) -> None:
    kube = Kube.from_environment(devenv["kubeconfig"])
    uid = str(uuid.uuid4())
    obj = {"apiVersion": "kameng.io/v1alpha1", "kind": "SubSite",
           "metadata": {"name": f"ev-{uid[:8]}", "uid": uid}}
    try:
        # 40 different messages (no deduplication possible): only the burst gets through.
        for i in range(40):
            await events.post(kube, obj, "Warning", "Flap", f"attempt {i}")
        mine = _ours(await kube.list(path_for("v1", "Event", namespace="default")), uid)
        assert len(mine) == events.SPAM_BURST
    finally:
        await kube.close()


def test_bucket_refills_over_time() -> None:
    now = [0.0]
    corr = events.Correlator(burst=2, refill_seconds=10.0, clock=lambda: now[0])
    assert corr.allow("a")
    assert corr.allow("a")
    assert not corr.allow("a")
    assert corr.allow("b")  # per object
    now[0] = 10.0
    assert corr.allow("a")
    assert not corr.allow("a")
