"""`kubectl kameng` against the real API server, found by kubectl as a plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = "plugin-check"


@pytest.fixture(scope="module")
def site(kubectl):
    lic = yaml.safe_load((ROOT / "manifests/samples/license-demo.yaml").read_text())
    ss = yaml.safe_load((ROOT / "manifests/samples/subsite-demo.yaml").read_text())
    lic["metadata"]["name"] = SITE
    lic["spec"]["subSite"] = SITE
    lic["spec"]["term"] = {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    ss["metadata"]["name"] = SITE
    ss["spec"]["licenseRef"] = SITE
    ss["spec"]["domain"] = f"{SITE}.example"
    kubectl("apply", "-f", str(ROOT / "manifests/samples/rolepolicy-standard.yaml"))
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": [lic, ss]}))
    yield SITE
    kubectl("delete", "subsite,license", SITE, "--wait=false", check=False)


def plugin(devenv, *args: str) -> subprocess.CompletedProcess[str]:
    # Through kubectl's plugin discovery, as a person would call it.
    env = {**os.environ, "KUBECONFIG": devenv["kubeconfig"],
           "PATH": f"{Path(sys.executable).parent}:{devenv['bin_dir']}:{os.environ['PATH']}"}
    return subprocess.run([str(Path(devenv["bin_dir"]) / "kubectl"), "kameng", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def _license(kubectl) -> dict:
    return json.loads(kubectl("get", "license", SITE, "-o", "json").stdout)["spec"]


def test_suspend_and_resume_patch_the_license(devenv, kubectl, site):
    out = plugin(devenv, "suspend", site, "--reason", "risk")
    assert out.returncode == 0, out.stderr
    spec = _license(kubectl)
    assert spec["suspended"] is True
    assert spec["suspendReason"] == "risk"
    status = plugin(devenv, "status", site)
    assert "suspended: risk" in status.stdout
    out = plugin(devenv, "resume", site)
    assert out.returncode == 0, out.stderr
    spec = _license(kubectl)
    assert spec["suspended"] is False
    assert "suspendReason" not in spec


def test_renew_extends_from_expiry(devenv, kubectl, site):
    before = _license(kubectl)["term"]["end"]
    out = plugin(devenv, "renew", site, "--extend", "365d")
    assert out.returncode == 0, out.stderr
    after = _license(kubectl)["term"]["end"]
    assert before == "2027-01-01T00:00:00Z"
    assert after == "2028-01-01T00:00:00Z"


def test_renew_refuses_an_earlier_end(devenv, site):
    out = plugin(devenv, "renew", site, "--until", "2020-01-01T00:00:00Z")
    assert out.returncode == 1
    assert "is not after the current end" in out.stderr


def test_unknown_site_is_a_clear_error(devenv):
    out = plugin(devenv, "suspend", "no-such-site", "--reason", "x")
    assert out.returncode == 1
    assert "'no-such-site' not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_export_is_clean_reappliable_yaml(devenv, kubectl, site):
    out = plugin(devenv, "export", site)
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs] == ["License", "RolePolicy", "SubSite"]
    for d in docs:
        assert "status" not in d
        assert set(d["metadata"]) <= {"name", "labels", "annotations"}
    # What it prints applies back without changes.
    res = kubectl("apply", "--dry-run=server", "-f", "-", input=out.stdout)
    assert res.stdout.count("(server dry run)") == 3
