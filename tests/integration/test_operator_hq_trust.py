"""The operator's side of "HQ trusts no site", end to end on the dev environment: a real
operator mints each site's HQ API token and publishes it in the site-credential registry,
a real HQ (reading that registry as the kubelet would mount it) accepts exactly what the
registry says; rotation, suspension and deletion of one site act on that site alone; and
the license sequence survives a License deleted and re-created."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kameng.contracts import pod
from kameng.contracts.hq_api import CATALOG_PATH, NOTIFY_PATH, PAYMENTS_PATH, site_headers
from kameng.contracts.hq_auth import REGISTRY_SECRET, SiteCredential
from tests.integration.test_operator_lifecycle import fresh_start, get, sample_objects, wait_for
from tests.support.operator import OperatorProcess
from tests.support.storefront import mount_secret, run_hq

pytestmark = pytest.mark.integration

A, B, RP = "it-trust-a", "it-trust-b", "it-trust-rp"
SYSTEM = "kameng-system"


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    fresh_start(kubectl, A, B)
    for name in (A, B):
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(sample_objects(name, RP)))
    for name in (A, B):
        kubectl("wait", "--for=condition=Ready", f"subsite/{name}", "--timeout=60s",
                timeout=90)
    yield op
    for name in (A, B):
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true", timeout=60)
    kubectl("delete", "license", A, B, "--ignore-not-found")
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
    op.stop()


class Hq:
    """A real HQ whose registry directory is kept in step with the registry Secret the way
    the kubelet keeps a Secret volume (here on demand: :meth:`sync`)."""

    def __init__(self, kubectl: Any, url: str, directory: Path) -> None:
        self.kubectl, self.url, self.directory = kubectl, url, directory

    def registry(self) -> dict[str, Any] | None:
        proc = self.kubectl("get", "secret", REGISTRY_SECRET, "-n", SYSTEM, "-o", "json",
                            check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def entry(self, site: str) -> SiteCredential | None:
        raw = ((self.registry() or {}).get("data") or {}).get(site)
        return SiteCredential.from_json(base64.b64decode(raw)) if raw else None

    def sync(self) -> None:
        mount_secret(self.registry(), self.directory)

    def catalog(self, site: str, token: str) -> int:
        return httpx.get(self.url + CATALOG_PATH, headers=site_headers(site, token)).status_code

    def open_payment(self, site: str, token: str, license_token: str, order: str
                     ) -> httpx.Response:
        base = f"http://{site}.shop.example"  # the SubSite's domain: its registered URL
        return httpx.post(self.url + PAYMENTS_PATH, headers=site_headers(site, token,
                                                                        license_token),
                          json={"order_id": order, "amount": 100, "notify_url":
                                base + NOTIFY_PATH, "return_url": f"{base}/order/{order}"})


@pytest.fixture(scope="module")
def hq(operator: OperatorProcess, devenv: dict[str, str], kubectl: Any,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hq]:
    public_key = _secret(kubectl, SYSTEM, pod.HQ_KEYS_SECRET, pod.HQ_PUBLIC_KEY.key)
    directory = tmp_path_factory.mktemp("registry")
    with run_hq(devenv["pg_admin_dsn"], devenv["redis_url"], public_key, directory) as (url, _):
        h = Hq(kubectl, url, directory)
        h.sync()
        yield h


def _secret(kubectl: Any, ns: str, name: str, key: str) -> str:
    data = get(kubectl, "secret", name, "-n", ns).get("data") or {}
    return base64.b64decode(data.get(key, "")).decode()


def _token(kubectl: Any, site: str) -> str:
    return _secret(kubectl, f"kameng-{site}", pod.KEYS_SECRET, pod.HQ_API_TOKEN.key)


def _license(kubectl: Any, site: str) -> str:
    return _secret(kubectl, f"kameng-{site}", pod.LICENSE_SECRET, pod.LICENSE_TOKEN.key)


def _plugin(devenv: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "kameng.cli.kubectl_plugin", *args],
                          env={"KUBECONFIG": devenv["kubeconfig"], "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout


def test_each_site_gets_a_random_token_hq_accepts(hq: Hq, kubectl: Any) -> None:
    tokens = {s: _token(kubectl, s) for s in (A, B)}
    assert all(len(t) >= 43 for t in tokens.values())
    assert tokens[A] != tokens[B]
    for site, token in tokens.items():
        entry = hq.entry(site)
        assert entry is not None
        assert entry.accepts(token)
        assert entry.state == "active"
        assert entry.urls == [f"http://{site}.shop.example"]
        assert token not in json.dumps(hq.registry())  # only digests are published
        assert hq.catalog(site, token) == 200
    assert hq.catalog(A, tokens[B]) == 401  # one site's token is no other's


def test_license_sequence_survives_a_recreated_license(hq: Hq, kubectl: Any) -> None:
    token = _token(kubectl, A)
    lic = get(kubectl, "license", A)
    # Edit the License twice (its generation grows), showing each token to HQ.
    for i, regions in enumerate((["CN-31"], ["CN-31", "CN-11"])):
        before = _license(kubectl, A)
        kubectl("patch", "license", A, "--type=merge", "-p",
                json.dumps({"spec": {"regions": regions}}))
        wait_for(lambda b=before: _license(kubectl, A) not in ("", b), 30, "a new token")
        r = hq.open_payment(A, token, _license(kubectl, A), f"SEQ-{i}")
        assert r.status_code == 200, r.text
    highest = _seq(kubectl, A)
    # Delete and re-create the License: its generation starts again at 1.
    kubectl("delete", "license", A, "--wait=true", timeout=60)
    wait_for(lambda: _license(kubectl, A) == "", 30, "the token withdrawn")
    spec = {k: v for k, v in lic.items() if k in ("apiVersion", "kind", "spec")}
    spec["metadata"] = {"name": A}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))
    wait_for(lambda: _license(kubectl, A) != "", 30, "a token again")
    assert get(kubectl, "license", A)["metadata"]["generation"] == 1
    assert _seq(kubectl, A) > highest
    r = hq.open_payment(A, token, _license(kubectl, A), "SEQ-after")
    assert r.status_code == 200, r.text  # not locked out at HQ


def _seq(kubectl: Any, site: str) -> int:
    body = _license(kubectl, site).split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["seq"])


def test_rotation_replaces_one_sites_token_only(hq: Hq, kubectl: Any,
                                                devenv: dict[str, str]) -> None:
    old_a, b = _token(kubectl, A), _token(kubectl, B)
    entry_b = hq.entry(B)
    out = _plugin(devenv, "rotate-credentials", A)
    assert "rotation requested" in out
    wait_for(lambda: _token(kubectl, A) != old_a, 30, "a new token in A's Secret")
    new_a = _token(kubectl, A)
    wait_for(lambda: (e := hq.entry(A)) is not None and e.accepts(new_a), 30, "published")
    hq.sync()
    assert hq.catalog(A, old_a) == 401
    assert hq.catalog(A, new_a) == 200
    # B: same token, same entry, still accepted.
    assert _token(kubectl, B) == b
    assert hq.entry(B) == entry_b
    assert hq.catalog(B, b) == 200
    # Acted on once: later reconciles keep the new token.
    kubectl("annotate", "subsite", A, "kameng.io/touch=1", "--overwrite")
    time.sleep(2)
    assert _token(kubectl, A) == new_a


def test_suspension_and_deletion_revoke(hq: Hq, kubectl: Any, devenv: dict[str, str]) -> None:
    a, b = _token(kubectl, A), _token(kubectl, B)
    _plugin(devenv, "suspend", A, "--reason", "test")
    wait_for(lambda: (e := hq.entry(A)) is not None and e.state == "suspended", 30,
             "A's credential suspended")
    hq.sync()
    assert hq.catalog(A, a) == 403
    assert hq.catalog(B, b) == 200
    _plugin(devenv, "resume", A)
    wait_for(lambda: (e := hq.entry(A)) is not None and e.state == "active", 30, "active")
    hq.sync()
    assert hq.catalog(A, a) == 200
    kubectl("delete", "subsite", A, "--wait=true", "--timeout=60s", timeout=90)
    assert hq.entry(A) is None
    hq.sync()
    assert hq.catalog(A, a) == 401
    assert hq.catalog(B, b) == 200
