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


SESSION_SECRET = "plugin-check-session-secret"


@pytest.fixture
def key_copy(kubectl, site):
    """HQ's copy of the site's keys, as the operator keeps it in its namespace."""
    from kameng.controller import keyvault

    name = keyvault.backup_name(site)
    ns = kubectl("create", "namespace", "kameng-system", "--dry-run=client", "-o", "json").stdout
    kubectl("apply", "-f", "-", input=ns)
    secret = kubectl("create", "secret", "generic", name, "-n", "kameng-system",
                     f"--from-literal={keyvault.SESSION}={SESSION_SECRET}",
                     f"--from-literal={keyvault.DATA_KEY}=k1:unused",
                     "--dry-run=client", "-o", "json").stdout
    kubectl("apply", "-f", "-", input=secret)  # idempotent: a left-over copy is replaced
    yield name
    kubectl("delete", "secret", name, "-n", "kameng-system", "--ignore-not-found", check=False)


def test_invite_prints_a_signed_one_time_link_per_member(devenv, kubectl, site, key_copy):
    from kameng.contracts import invitation

    out = plugin(devenv, "invite", site, "zhang-min")
    assert out.returncode == 0, out.stderr
    member, email, url = out.stdout.strip().split("\t")
    assert (member, email) == ("zhang-min", "zhang.min@demo-partner.example")
    # The shop's URL as the operator reports it, else its domain (no operator runs here,
    # but one of another test may have reported this SubSite's status before).
    ss = json.loads(kubectl("get", "subsite", SITE, "-o", "json").stdout)
    base = (ss.get("status") or {}).get("url") or f"https://{SITE}.example"
    assert url.startswith(f"{base}/admin/invite/")
    claims = invitation.verify(url.rsplit("/", 1)[1],
                               invitation.invitation_key(SESSION_SECRET), SITE)
    assert (claims.member, claims.email) == ("zhang-min", "zhang.min@demo-partner.example")
    assert 71 * 3600 < claims.exp - claims.iat <= 72 * 3600
    assert "hand it over privately" in out.stderr
    # Several at once, in JSON, with a chosen lifetime and base URL.
    out = plugin(devenv, "invite", site, "--all", "--ttl", "2h", "--url",
                 "http://127.0.0.1:9", "-o", "json")
    assert out.returncode == 0, out.stderr
    invites = json.loads(out.stdout)["invitations"]
    assert [i["member"] for i in invites] == ["li-wei", "zhang-min"]
    tokens = [i["url"].removeprefix("http://127.0.0.1:9/admin/invite/") for i in invites]
    assert len(set(tokens)) == 2
    for t in tokens:
        c = invitation.verify(t, invitation.invitation_key(SESSION_SECRET), SITE)
        assert c.exp - c.iat == 7200


def test_invite_errors_are_clear(devenv, site, key_copy, kubectl):
    out = plugin(devenv, "invite", site, "nobody")
    assert out.returncode == 1
    assert "has no member 'nobody' (members: li-wei, zhang-min)" in out.stderr
    out = plugin(devenv, "invite", site, "li-wei", "--ttl", "40d")
    assert out.returncode == 1
    assert "between 1 second and 30 days" in out.stderr
    out = plugin(devenv, "invite", site)
    assert out.returncode == 1
    assert "--all" in out.stderr
    kubectl("delete", "secret", key_copy, "-n", "kameng-system")
    out = plugin(devenv, "invite", site, "li-wei")
    assert out.returncode == 1
    assert f"kameng-system/{key_copy} not found" in out.stderr
    assert "Traceback" not in out.stderr
