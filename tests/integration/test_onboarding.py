"""Partner onboarding end to end on the dev environment: a partner applies on HQ's public
page (validated, with a logo and a document), a reviewer notes the checks and approves in
HQ's back office, HQ creates the License and SubSite through the Kubernetes API, a real
operator makes the shop Ready, and the partner's status page hands out an invitation that
works on the shop (run from what the operator wrote). In GitOps mode the approval yields a
bundle that `kubectl apply -k` turns into the same Ready shop. Approving twice (or after
HQ crashed in between) adopts; an object of that name HQ did not create is never touched.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kameng.contracts.license_token import generate_signing_key, public_key_to_b64
from tests.integration.test_operator_lifecycle import get, sample_objects
from tests.integration.test_operator_rbac import RBAC_KINDS, ROOT, sa_kubeconfig
from tests.support.operator import OperatorProcess, drop_retained_data
from tests.support.storefront import (
    DEFAULT_PASSWORD,
    HQ_ADMIN,
    csrf_from,
    redeem_invitation,
    run_hq,
    run_site_from_cluster,
    staff_client,
)

pytestmark = pytest.mark.integration

RP = "it-onb-rp"
HQ_PASSWORD = "onboarding-reviewer-pass-1"
RUN = secrets.token_hex(3)  # retained databases of earlier runs never collide


def record_timing(name: str, seconds: float) -> None:
    """Measured figures go to the test artefacts (and the log), one line per run."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {name} {seconds:.2f}"
    print(line)
    out = Path("artifacts")
    out.mkdir(exist_ok=True)
    with (out / "onboarding-timings.txt").open("a") as f:
        f.write(line + "\n")


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xc0\x39\x2b" * 16 for _ in range(16))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    kubectl("apply", "-f", "-", input=yaml.safe_dump(sample_objects("x", RP)[1]))
    yield op
    op.stop()
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found", check=False)


def hq_rbac() -> list[dict[str, Any]]:
    """The chart's HQ ServiceAccount and roles, from the rendered manifests."""
    rendered = yaml.safe_load_all((ROOT / "manifests" / "operator" / "kameng.yaml").read_text())
    return [d for d in rendered if d and d["kind"] in RBAC_KINDS
            and d["metadata"]["name"].startswith("kameng-hq")]


def remove_hq_identity(kubectl: Any) -> None:
    """Undo :func:`hq_kubeconfig`: the objects are cluster-wide and the chart's own; left
    behind, a later `helm install` refuses them and a later test starts from them."""
    for d in hq_rbac():
        ns = ["-n", d["metadata"]["namespace"]] if d["metadata"].get("namespace") else []
        kubectl("delete", d["kind"].lower(), d["metadata"]["name"], *ns,
                "--ignore-not-found", check=False)


def hq_kubeconfig(kubectl: Any, admin_kubeconfig: str, path: Path) -> str:
    """HQ's own identity: the ServiceAccount kameng-hq with exactly the chart's HQ roles
    (from the rendered manifests; renewals included: it is ONE ServiceAccount holding one
    named role per capability), as a kubeconfig."""
    rbac = hq_rbac()
    assert {d["metadata"]["name"] for d in rbac} == {
        "kameng-hq", "kameng-hq-onboarding", "kameng-hq-onboarding-invitations",
        "kameng-hq-approvals", "kameng-hq-renewals"}
    kubectl("apply", "-f", str(ROOT / "manifests" / "operator" / "namespace.yaml"))
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    return sa_kubeconfig(kubectl, admin_kubeconfig, path, account="kameng-hq")


@pytest.fixture(scope="module")
def hq_identity(devenv: dict[str, str], kubectl: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        yield hq_kubeconfig(kubectl, devenv["kubeconfig"],
                            tmp_path_factory.mktemp("hq") / "hq.kubeconfig")
    finally:
        remove_hq_identity(kubectl)


def test_hq_service_account_holds_only_what_onboarding_needs(hq_identity: str,
                                                             kubectl: Any) -> None:
    def can(*args: str) -> bool:
        out = kubectl("--kubeconfig", hq_identity, "auth", "can-i", *args, check=False)
        return out.stdout.strip() == "yes"

    assert can("create", "subsites.kameng.io")
    assert can("create", "licenses.kameng.io")
    assert can("get", "secrets", "-n", "kameng-system")
    assert can("patch", "subsites.kameng.io")  # approvals
    assert can("patch", "licenses.kameng.io")  # renewals (the same ServiceAccount)
    for verb in (("delete", "subsites.kameng.io"), ("delete", "licenses.kameng.io"),
                 ("update", "subsites.kameng.io"), ("list", "subsites.kameng.io"),
                 ("create", "rolepolicies.kameng.io"), ("get", "secrets", "-n", "default"),
                 ("list", "secrets", "-n", "kameng-system")):
        assert not can(*verb), verb


@pytest.fixture
def cleanup(kubectl: Any, pg_admin_dsn: str) -> Iterator[list[str]]:
    sites: list[str] = []
    yield sites
    for name in sites:
        deleted = kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true",
                          "--timeout=90s", timeout=120, check=False).returncode == 0
        kubectl("delete", "license", name, "--ignore-not-found", check=False)
        if deleted:  # its retained data too (a new name per run: they would pile up)
            drop_retained_data(pg_admin_dsn, kubectl, name)


def hq_for(kubeconfig: str, pg_admin_dsn: str, redis_url: str, tmp: Path,
           mode: str) -> Any:
    return run_hq(pg_admin_dsn, redis_url, public_key_to_b64(generate_signing_key()),
                  tmp / f"creds-{mode}", overrides={
                      "kubeconfig": kubeconfig, "onboarding_mode": mode,
                      "onboarding_rolepolicy": RP, "namespace": "kameng-system"})


def apply_form(hq_url: str, **fields: str) -> tuple[httpx.Response, httpx.Client]:
    c = httpx.Client(base_url=hq_url, timeout=30)
    data = {"csrf": csrf_from(c.get("/apply").text), "company": "星河数码 Galaxy Digital",
            "contact_name": "Chen Jing", "contact_email": "chen.jing@galaxy.example",
            "plan": "basic", "categories": "game-cards, mobile-topup", "regions": "CN-31",
            "capability": "Five years selling game cards; 3 support staff.", **fields}
    files = [("logo", ("logo.png", tiny_png(), "image/png")),
             ("documents", ("licence.pdf", PDF, "application/pdf"))]
    return c.post("/apply", data=data, files=files), c


def submit(hq_url: str, site: str) -> tuple[str, str]:
    r, _ = apply_form(hq_url, site_name=site, domain=f"{site}.partners.example")
    assert r.status_code == 303, r.text[:2000]
    m = re.match(r"^/apply/(A[0-9a-f]+)\?k=(.+)$", r.headers["location"])
    assert m, r.headers["location"]
    return m.group(1), r.headers["location"]


def reviewer(hq_url: str) -> httpx.Client:
    try:
        return staff_client(hq_url, HQ_ADMIN, DEFAULT_PASSWORD,
                            replace_bootstrap_with=HQ_PASSWORD)
    except AssertionError:  # already replaced in this HQ
        return staff_client(hq_url, HQ_ADMIN, HQ_PASSWORD)


def decide(hq: httpx.Client, aid: str, decision: str, reason: str = "") -> str:
    page = hq.get(f"/admin/applications/{aid}")
    r = hq.post(f"/admin/applications/{aid}/{decision}",
                data={"csrf": csrf_from(page.text), "reason": reason})
    assert r.status_code == 303, r.text[:1000]
    return str(r.headers["location"]).split("msg=")[-1]


def wait_ready(kubectl: Any, site: str) -> None:
    kubectl("wait", "--for=condition=Ready", f"subsite/{site}", "--timeout=120s",
            timeout=150)


def invitation_from_status(hq_url: str, status_path: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = httpx.get(hq_url + status_path, timeout=30)
        assert page.status_code == 200
        assert page.headers["referrer-policy"] == "no-referrer"  # the link holds the key
        m = re.search(r'href="([^"]+)" id="invitation-link"', page.text)
        if m:
            return m.group(1).replace("&amp;", "&")
        time.sleep(0.5)
    raise AssertionError("the status page never offered an invitation")


def redeem_on_local_shop(kubectl: Any, site: str, hq_url: str, link: str, tmp: Path) -> None:
    """The link names the shop's public URL; the shop runs locally here, so the path is
    opened there. The owner sets a password and reaches the back office."""
    token = link.split("/admin/invite/")[1]
    with run_site_from_cluster(kubectl, site, hq_url, tmp) as shop_url:
        client = redeem_invitation(shop_url, token, DEFAULT_PASSWORD)
        page = client.get("/admin")
        assert page.status_code == 200
        assert 'action="/admin/logout"' in page.text, page.text[:1000]


def test_form_refuses_bad_input_with_clear_errors(
        devenv: dict[str, str], pg_admin_dsn: str, redis_url: str, kubectl: Any,
        tmp_path: Path, operator: OperatorProcess, cleanup: list[str],
        hq_identity: str) -> None:
    existing = f"ext-{RUN}"
    cleanup.append(existing)
    kubectl("apply", "-f", "-", input=yaml.safe_dump(sample_objects(existing, RP,
                                                                    license_=False)[1]))
    with hq_for(hq_identity, pg_admin_dsn, redis_url, tmp_path, "kubernetes") as (hq_url, _):
        r, c = apply_form(hq_url, site_name="system", domain="not a domain",
                          contact_email="nope", categories="Game Cards!")
        assert r.status_code == 422
        fields = set(re.findall(r'data-field="([a-z_]+)"', r.text))
        assert fields == {"site_name", "domain", "contact_email", "categories"}, fields
        assert "reserved" in r.text or "保留" in r.text
        # A logo that is not an image is refused by its bytes, whatever its name says.
        data = {"csrf": csrf_from(c.get("/apply").text), "company": "Acme", "contact_name": "A",
                "contact_email": "a@acme.example", "site_name": f"acme-{RUN}",
                "domain": f"acme-{RUN}.example.com", "plan": "basic", "categories": "game-cards"}
        r = c.post("/apply", data=data, files=[
            ("logo", ("logo.png", b"<svg onload=alert(1)>", "image/png"))])
        assert r.status_code == 422
        assert 'data-field="logo"' in r.text
        # A name an existing SubSite has (not HQ's) is refused before anyone reviews it.
        r, _ = apply_form(hq_url, site_name=existing, domain=f"x-{RUN}.example.com")
        assert r.status_code == 422
        assert 'data-field="site_name"' in r.text, r.text[:3000]
        # The same name twice: the second application is refused.
        submit(hq_url, f"dup-{RUN}")
        r, _ = apply_form(hq_url, site_name=f"dup-{RUN}", domain=f"dup2-{RUN}.example.com")
        assert r.status_code == 422
        assert 'data-field="site_name"' in r.text


def test_approved_application_yields_ready_shop_and_working_invitation(
        devenv: dict[str, str], pg_admin_dsn: str, redis_url: str, kubectl: Any,
        tmp_path: Path, operator: OperatorProcess, cleanup: list[str],
        hq_identity: str) -> None:
    site = f"onb-{RUN}"
    cleanup.append(site)
    with hq_for(hq_identity, pg_admin_dsn, redis_url, tmp_path, "kubernetes") as (hq_url, _):
        aid, status_path = submit(hq_url, site)
        hq = reviewer(hq_url)
        queue = hq.get("/admin/applications")
        assert f'data-id="{aid}"' in queue.text
        page = hq.get(f"/admin/applications/{aid}")
        r = hq.post(f"/admin/applications/{aid}/notes", data={
            "csrf": csrf_from(page.text), "qualification_notes": "business licence checked",
            "credit_notes": "no disputes on record", "capability_notes": "3 support staff"})
        assert r.status_code == 303
        assert httpx.get(hq_url + status_path).text.count('data-status="pending"') == 1

        t0 = time.monotonic()
        assert decide(hq, aid, "approve", "meets all checks") == "approved"
        wait_ready(kubectl, site)
        seconds = time.monotonic() - t0
        record_timing("approved_to_ready_seconds", seconds)
        assert seconds < 60

        ss = get(kubectl, "subsite", site)
        assert ss["spec"]["rolePolicyRef"] == RP
        assert ss["spec"]["members"][0]["email"] == "chen.jing@galaxy.example"
        assert ss["metadata"]["labels"]["kameng.io/onboarding-application"] == aid
        lic = get(kubectl, "license", site)
        assert lic["spec"]["categories"] == ["game-cards", "mobile-topup"]

        # Approving again (a double click, or HQ restarted mid-way) adopts, changes nothing.
        uid = ss["metadata"]["uid"]
        assert decide(hq, aid, "approve") == "approved"
        assert get(kubectl, "subsite", site)["metadata"]["uid"] == uid

        link = invitation_from_status(hq_url, status_path)
        assert "/admin/invite/" in link
        redeem_on_local_shop(kubectl, site, hq_url, link, tmp_path / "shop")

        trail = hq.get(f"/admin/applications/{aid}").text
        for action in ("submitted", "checks_noted", "approved", "provisioned",
                       "invitation_issued"):
            assert f"<td>{action}</td>" in trail, action


def test_rejected_application_creates_nothing(
        devenv: dict[str, str], pg_admin_dsn: str, redis_url: str, kubectl: Any,
        tmp_path: Path, operator: OperatorProcess, hq_identity: str) -> None:
    site = f"rej-{RUN}"
    with hq_for(hq_identity, pg_admin_dsn, redis_url, tmp_path, "kubernetes") as (hq_url, _):
        aid, status_path = submit(hq_url, site)
        hq = reviewer(hq_url)
        assert decide(hq, aid, "reject", "no qualification documents") == "rejected"
        assert decide(hq, aid, "approve") == "decided"  # a rejection is final
        assert kubectl("get", "subsite", site, check=False).returncode != 0
        assert kubectl("get", "license", site, check=False).returncode != 0
        page = httpx.get(hq_url + status_path).text
        assert 'data-status="rejected"' in page
        assert "no qualification documents" in page


def test_foreign_object_of_that_name_is_never_adopted(
        devenv: dict[str, str], pg_admin_dsn: str, redis_url: str, kubectl: Any,
        tmp_path: Path, operator: OperatorProcess, cleanup: list[str],
        hq_identity: str) -> None:
    site = f"own-{RUN}"
    cleanup.append(site)
    with hq_for(hq_identity, pg_admin_dsn, redis_url, tmp_path, "kubernetes") as (hq_url, _):
        aid, _ = submit(hq_url, site)
        # Meanwhile a platform engineer creates a License of that name by hand.
        lic = sample_objects(site, RP)[0]
        kubectl("apply", "-f", "-", input=yaml.safe_dump(lic))
        hq = reviewer(hq_url)
        assert decide(hq, aid, "approve") == "name_taken"
        assert "kameng.io/onboarding-application" not in (
            get(kubectl, "license", site)["metadata"].get("labels") or {})
        assert kubectl("get", "subsite", site, check=False).returncode != 0


def test_gitops_bundle_applies_and_yields_the_same(
        devenv: dict[str, str], pg_admin_dsn: str, redis_url: str, kubectl: Any,
        tmp_path: Path, operator: OperatorProcess, cleanup: list[str],
        hq_identity: str) -> None:
    site = f"git-{RUN}"
    cleanup.append(site)
    with hq_for(hq_identity, pg_admin_dsn, redis_url, tmp_path, "gitops") as (hq_url, _):
        aid, status_path = submit(hq_url, site)
        hq = reviewer(hq_url)
        assert decide(hq, aid, "approve", "ok") == "approved"
        # GitOps mode: HQ wrote nothing to the cluster; the bundle is the change.
        assert kubectl("get", "subsite", site, check=False).returncode != 0
        r = hq.get(f"/admin/applications/{aid}/bundle.zip")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/zip"
        out = tmp_path / "repo"
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            assert sorted(z.namelist()) == [f"{site}/kustomization.yaml",
                                            f"{site}/license.yaml", f"{site}/subsite.yaml"]
            z.extractall(out)
        t0 = time.monotonic()
        kubectl("apply", "-k", str(out / site))
        wait_ready(kubectl, site)
        seconds = time.monotonic() - t0
        record_timing("gitops_applied_to_ready_seconds", seconds)
        link = invitation_from_status(hq_url, status_path)
        redeem_on_local_shop(kubectl, site, hq_url, link, tmp_path / "shop")
        # A second approve is harmless in GitOps mode too.
        assert decide(hq, aid, "approve") == "approved"
        assert json.loads(kubectl("get", "subsite", site, "-o", "json").stdout)[
            "metadata"]["labels"]["kameng.io/onboarding-application"] == aid
