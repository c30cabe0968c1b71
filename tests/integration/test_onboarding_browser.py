"""The new pages in headless Chromium, with screenshots in artifacts/screenshots/: HQ's
public application form (and its errors), the partner's status page, the reviewers' queue
and an application, the partner's change requests and HQ's approvals queue."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import WebDriver, browser_fixture  # noqa: F401 - the fixture
from tests.support.storefront import DEFAULT_PASSWORD, HQ_ADMIN, run_stack, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(devenv: dict[str, str], pg_admin_dsn: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Any:
    # HQ sees the dev cluster (no SubSite of this name, no RolePolicy: every request waits).
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("onbb"),
                   hq_overrides={"kubeconfig": devenv["kubeconfig"]}) as st:
        yield st


def test_application_and_review_pages(stack: Any, browser: WebDriver) -> None:
    shots = []
    browser.get(f"{stack.hq_url}/apply?lang=en")
    shots.append(browser.screenshot("40-hq-apply-form"))
    for name, value in (("company", "Galaxy Digital 星河数码"), ("contact_name", "Chen Jing"),
                        ("contact_email", "chen@galaxy.example"), ("site_name", "system"),
                        ("domain", "galaxy"), ("categories", "game-cards"),
                        ("regions", "CN-31"), ("capability", "Five years of game cards.")):
        browser.type(f"[name={name}]", value)
    browser.click("#apply-submit")
    wait_for(lambda: browser.exists("#apply-errors"), timeout=15)
    assert "reserved" in browser.text("#apply-errors")
    assert "shop.example.com" in browser.text("#apply-errors")
    shots.append(browser.screenshot("41-hq-apply-errors"))
    browser.get(f"{stack.hq_url}/apply?lang=en")
    for name, value in (("company", "Galaxy Digital 星河数码"), ("contact_name", "Chen Jing"),
                        ("contact_email", "chen@galaxy.example"), ("site_name", "galaxy"),
                        ("domain", "shop.galaxy.example"), ("categories", "game-cards"),
                        ("regions", "CN-31"), ("capability", "Five years of game cards.")):
        browser.type(f"[name={name}]", value)
    browser.click("#apply-submit")
    wait_for(lambda: browser.exists("#application"), timeout=15)
    assert "waiting for review" in browser.text("#app-status")
    shots.append(browser.screenshot("42-hq-apply-status"))

    browser.login(stack.hq_url, HQ_ADMIN, DEFAULT_PASSWORD)
    browser.get(f"{stack.hq_url}/admin/applications?lang=en")
    assert browser.exists("tr.application")
    shots.append(browser.screenshot("43-hq-applications-queue"))
    browser.click("tr.application a")
    wait_for(lambda: browser.exists("#checks"), timeout=15)
    browser.type("[name=qualification_notes]", "business licence 91310000XXXX checked")
    browser.type("[name=credit_notes]", "no chargebacks in 12 months")
    browser.click("#save-checks")
    wait_for(lambda: browser.exists("#message"), timeout=15)
    shots.append(browser.screenshot("44-hq-application-review"))

    owner = stack.members["owner"]
    browser.login(stack.shop_url, owner, stack.password)
    browser.get(f"{stack.shop_url}/admin/requests?lang=en")
    assert "needs HQ approval" not in browser.text("main")  # this config lists none
    browser.click('#form-payments input[value="alipay"]')
    browser.click("#form-payments button")
    wait_for(lambda: browser.exists("tr.request"), timeout=15)
    shots.append(browser.screenshot("45-shop-change-requests"))

    browser.login(stack.hq_url, HQ_ADMIN, DEFAULT_PASSWORD)
    browser.get(f"{stack.hq_url}/admin/approvals?lang=en")
    browser.click("tr.approval a")
    wait_for(lambda: browser.exists("#request"), timeout=15)
    assert "alipay" in browser.text("#change")
    shots.append(browser.screenshot("46-hq-approvals"))
    for path in shots:
        assert path.stat().st_size > 5_000, path
