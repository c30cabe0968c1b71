"""Tiered rights on the real dev environment: the plan (License.spec.plan, signed into the
license token) unlocks features. The operator refuses the site's own TLS on basic (status
message, Ingress without it) and serves it once the License is promoted; the shop refuses
marketing on basic (403 with the plan that unlocks it, coupons refused at checkout,
announcements hidden), shows what a higher plan adds, and opens it when the token says
flagship."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from kameng.contracts.license_token import sign_token
from tests.support.browser import browser_fixture  # noqa: F401 - the fixture
from tests.support.net import HTTP_TIMEOUT
from tests.support.operator import OperatorProcess
from tests.support.storefront import (
    csrf_from,
    hq_add_product,
    hq_import_keys,
    run_stack,
    staff_client,
    wait_for,
)
from tests.support.wait import wait_for as poll

from .test_operator_lifecycle import fresh_start, get, sample_objects

SITE, RP = "it-plans", "it-plans-rp"


def _ready(kubectl: Any) -> dict[str, Any]:
    conds = (get(kubectl, "subsite", SITE).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


def test_own_tls_needs_flagship(devenv: dict[str, str], kubectl: Any, tmp_path: Any) -> None:
    lic, rp, ss = sample_objects(SITE, RP)
    lic["spec"]["plan"] = "basic"
    ss["spec"]["tls"] = {"secretName": "it-plans-cert"}
    ss["spec"]["database"] = {"reclaimPolicy": "Delete"}
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path / "op.log").start()
    try:
        fresh_start(kubectl, SITE)
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([lic, rp, ss]))
        poll(lambda: _ready(kubectl).get("reason") == "PlanFeatureMissing", timeout=90,
             what="the locked feature reported")
        message = _ready(kubectl)["message"]
        assert "spec.tls" in message
        assert "flagship" in message
        assert get(kubectl, "subsite", SITE)["status"]["url"] == f"http://{SITE}.shop.example"
        ing = get(kubectl, "ingress", "storefront", "-n", f"kameng-{SITE}")
        assert "tls" not in ing["spec"]
        # HQ promotes the site: the same SubSite is served with its own TLS and Ready.
        kubectl("patch", "license", SITE, "--type", "merge", "-p",
                '{"spec":{"plan":"flagship"}}')
        kubectl("wait", "--for=condition=Ready", f"subsite/{SITE}", "--timeout=90s",
                timeout=120)
        ing = get(kubectl, "ingress", "storefront", "-n", f"kameng-{SITE}")
        assert ing["spec"]["tls"][0]["secretName"] == "it-plans-cert"
        assert get(kubectl, "subsite", SITE)["status"]["url"] == f"https://{SITE}.shop.example"
    finally:
        kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=true",
                "--timeout=60s", timeout=90)
        op.stop()
        kubectl("delete", "license", SITE, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")


def test_shop_refuses_what_basic_lacks_and_shows_the_upgrade(pg_admin_dsn, redis_url,
                                                             tmp_path):
    with run_stack(pg_admin_dsn, redis_url, tmp_path, license_overrides={"plan": "basic"}
                   ) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "steam-100", "game", "100.00", "92.50")
        hq_import_keys(hq, "steam-100", ["PLAN-1"])
        hq.close()
        with psycopg.connect(st.shop_dsn) as conn:
            # Made while the site was flagship: must not work on basic.
            conn.execute("INSERT INTO coupons (code, percent_off, max_uses)"
                         " VALUES ('OLD10', 10, 100)")
            conn.execute("INSERT INTO announcements (title, body)"
                         " VALUES ('Flagship sale', 'x')")
        owner = staff_client(st.shop_url, st.members["owner"])
        page = owner.get("/admin/marketing")
        assert page.status_code == 403
        assert 'data-feature="marketing" data-unlock="flagship"' in page.text
        r = owner.post("/admin/coupons", data={"csrf": csrf_from(page.text), "code": "NEW5",
                                               "percent_off": "5"})
        assert r.status_code == 403
        with psycopg.connect(st.shop_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM coupons WHERE code = 'NEW5'"
                                ).fetchone()[0] == 0
        export = owner.get("/admin/kpis.csv")
        assert export.status_code == 403
        assert 'data-feature="kpi_export" data-unlock="flagship"' in export.text
        assert 'id="kpi-csv-locked"' in owner.get("/admin/kpis").text
        plan = owner.get("/admin/plan").text
        assert '<code id="current-plan">basic</code>' in plan
        assert 'class="upgrade" data-plan="flagship"' in plan

        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
        wait_for(lambda: "steam-100" in shop.get("/").text)
        assert "Flagship sale" not in shop.get("/").text
        token = csrf_from(shop.get("/p/steam-100").text)
        r = shop.post("/checkout", data={"csrf": token, "product": "steam-100",
                                         "contact": "c@example.com", "coupon": "OLD10"})
        assert r.status_code == 400

        # Promoted: HQ signs a flagship token; the shop opens the features at once.
        st.write_license(sign_token(st.claims(plan="flagship", seq=2), st.signing_key))
        wait_for(lambda: owner.get("/admin/marketing").status_code == 200)
        export = owner.get("/admin/kpis.csv")
        assert export.status_code == 200
        assert export.text.startswith("day,category,visits,orders,gmv_fen")
        assert "Flagship sale" in shop.get("/").text
        token = csrf_from(shop.get("/p/steam-100").text)
        r = shop.post("/checkout", data={"csrf": token, "product": "steam-100",
                                         "contact": "c@example.com", "coupon": "OLD10"})
        assert r.status_code == 303
        owner.close()
        shop.close()


def _sa_kubeconfig(kubectl: Any, devenv: dict[str, str], namespace: str, sa: str,
                   path: Any) -> str:
    """A kubeconfig that authenticates as ServiceAccount ``sa`` (a bound token)."""
    token = kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    cfg = yaml.safe_load(Path(devenv["kubeconfig"]).read_text(encoding="utf-8"))
    cfg["users"] = [{"name": sa, "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = sa
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def test_hq_promotes_a_site_through_the_kubernetes_api(devenv, kubectl, pg_admin_dsn,
                                                       redis_url, tmp_path, browser):
    import subprocess

    root = Path(__file__).resolve().parents[2]
    ns, sa, site = "it-hq-plans", "kameng-hq", "itpromote"
    rbac = subprocess.run(
        [str(Path(devenv["bin_dir"]) / "helm"), "template", "kameng", str(root / "charts/kameng"),
         "--namespace", ns, "--set", "hqPlans.enabled=true",
         "--show-only", "templates/hq-plans-rbac.yaml"],
        capture_output=True, text=True, check=True).stdout
    lic = sample_objects(site, "unused")[0]
    lic["spec"]["plan"] = "basic"
    kubectl("create", "namespace", ns, check=False)
    kubectl("create", "serviceaccount", sa, "-n", ns, check=False)
    kubectl("apply", "-f", "-", input=rbac)
    kubectl("apply", "-f", "-", input=yaml.safe_dump(lic))
    try:
        kubeconfig = _sa_kubeconfig(kubectl, devenv, ns, sa, tmp_path / "hq.kubeconfig")
        # Least privilege: exactly list and patch on Licenses.
        who = f"--as=system:serviceaccount:{ns}:{sa}"
        for verb, res, allowed in (("patch", "licenses.kameng.io", "yes"),
                                   ("list", "licenses.kameng.io", "yes"),
                                   ("delete", "licenses.kameng.io", "no"),
                                   ("create", "licenses.kameng.io", "no"),
                                   ("patch", "subsites.kameng.io", "no"),
                                   ("patch", "licenses.kameng.io --subresource=status", "no"),
                                   ("get", "secrets", "no")):
            out = kubectl("auth", "can-i", verb, *res.split(), who, check=False).stdout.strip()
            assert out == allowed, (verb, res, out)

        with run_stack(pg_admin_dsn, redis_url, tmp_path, site=site,
                       license_overrides={"plan": "basic"},
                       hq_overrides={"kubeconfig": kubeconfig}) as st:
            hq = staff_client(st.hq_url, "admin@hq.local")
            page = hq.get("/admin/plans").text
            assert f'data-site="{site}" data-plan="basic"' in page
            browser.login(st.hq_url, "admin@hq.local", st.password)
            browser.get(f"{st.hq_url}/admin/plans?lang=en")
            assert browser.exists("button.promote")
            browser.screenshot("plans-01-hq-promote")
            r = hq.post(f"/admin/plans/{site}", data={"csrf": csrf_from(page),
                                                     "plan": "flagship"})
            assert r.status_code == 303, r.text[:300]
            assert get(kubectl, "license", site)["spec"]["plan"] == "flagship"
            page = hq.get("/admin/plans").text
            assert f'data-site="{site}" data-plan="flagship"' in page
            assert "basic → flagship" in page
            assert "admin@hq.local" in page
            # A plan that does not exist is refused before the API is asked.
            r = hq.post(f"/admin/plans/{site}", data={"csrf": csrf_from(page),
                                                     "plan": "platinum"})
            assert r.status_code == 400
            assert get(kubectl, "license", site)["spec"]["plan"] == "flagship"
            hq.close()
    finally:
        kubectl("delete", "license", site, "--ignore-not-found")
        kubectl("delete", "-f", "-", "--ignore-not-found", input=rbac, check=False)
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false")
