"""The Argo CD health checks, executed by a real Lua 5.1 interpreter (Redis's EVAL, the
same Lua dialect as Argo CD's gopher-lua), plus the argocd-cm patch embedding them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

ARGO = Path(__file__).resolve().parents[2] / "manifests" / "argocd"


def health(redis_url: str, script: str, obj: dict[str, Any]) -> dict[str, str]:
    # Argo CD runs the script with a global `obj`; wrap it as a function of `obj`.
    wrapper = ("local function check(obj)\n" + script +
               "\nend\nreturn cjson.encode(check(cjson.decode(ARGV[1])))")
    out = redis.Redis.from_url(redis_url).eval(wrapper, 0, json.dumps(obj))
    return json.loads(out)


def subsite(phase: str | None, **conds: str) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "demo", "generation": 2}}
    if phase is not None:
        obj["status"] = {"phase": phase, "observedGeneration": 2, "conditions": [
            {"type": t, "status": s, "message": f"{t} is {s}"} for t, s in conds.items()]}
    return obj


@pytest.mark.parametrize(("obj", "expected"), [
    (subsite(None), "Progressing"),
    (subsite("Ready", Ready="True", Stalled="False"), "Healthy"),
    (subsite("Provisioning", Ready="False", Reconciling="True", Stalled="False"),
     "Progressing"),
    (subsite("Pending", Ready="False", Stalled="True"), "Degraded"),
    (subsite("Failed", Ready="False", Stalled="True"), "Degraded"),
    (subsite("Suspended", Ready="False", LicenseValid="False"), "Suspended"),
    (subsite("Expired", Ready="False", LicenseValid="False"), "Suspended"),
])
def test_subsite_health(redis_url: str, obj: dict[str, Any], expected: str) -> None:
    hs = health(redis_url, (ARGO / "health-subsite.lua").read_text(), obj)
    assert hs["status"] == expected
    assert hs["message"]


def test_subsite_with_unobserved_generation_is_progressing(redis_url: str) -> None:
    obj = subsite("Ready", Ready="True")
    obj["metadata"]["generation"] = 3
    hs = health(redis_url, (ARGO / "health-subsite.lua").read_text(), obj)
    assert hs["status"] == "Progressing"


@pytest.mark.parametrize(("state", "expected"), [
    (None, "Progressing"), ("Active", "Healthy"), ("ExpiringSoon", "Healthy"),
    ("Grace", "Degraded"), ("Expired", "Degraded"), ("Suspended", "Suspended"),
    ("Terminated", "Degraded"),
])
def test_license_health(redis_url: str, state: str | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "demo"}, "spec": {"suspendReason": "risk"}}
    if state:
        obj["status"] = {"state": state, "expiresAt": "2036-01-01T00:00:00Z"}
    hs = health(redis_url, (ARGO / "health-license.lua").read_text(), obj)
    assert hs["status"] == expected
    if state == "Suspended":
        assert hs["message"] == "Suspended: risk"


def test_argocd_cm_patch_embeds_the_same_scripts() -> None:
    cm = yaml.safe_load((ARGO / "argocd-cm-health.yaml").read_text())
    data = cm["data"]
    assert data["resource.customizations.health.kameng.io_SubSite"] == \
        (ARGO / "health-subsite.lua").read_text()
    assert data["resource.customizations.health.kameng.io_License"] == \
        (ARGO / "health-license.lua").read_text()
    app = yaml.safe_load((ARGO / "application.yaml").read_text())
    assert app["kind"] == "Application"
