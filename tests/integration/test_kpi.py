"""Per-site KPIs on real HQ and shop (PostgreSQL, Redis): visits, purchases through HQ's
sandbox channel and a dispute move HQ's KPI gauges and both dashboards; labels stay
bounded; the pages render in headless Chromium (screenshots in artifacts/screenshots/)."""

from __future__ import annotations

from datetime import date

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kameng.contracts import hq_api
from tests.support.browser import browser_fixture  # noqa: F401 - the fixture
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    buy,
    csrf_from,
    hq_add_product,
    hq_import_keys,
    order_status,
    pay,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("kpi"),
                   hq_overrides={"kpi_seconds": 0.3},
                   shop_overrides={"kpi_seconds": 0.3}) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "steam-100", "game", "100.00", "92.50")
        hq_add_product(hq, "cmcc-50", "mobile", "50.00", "49.00", region="CN-31")
        hq_import_keys(hq, "steam-100", ["KPI-STEAM-1", "KPI-STEAM-2", "KPI-STEAM-3"])
        hq_import_keys(hq, "cmcc-50", ["KPI-CMCC-1"])
        hq.close()

        def synced() -> bool:  # polled in the shop's database: a page view would count
            with psycopg.connect(st.shop_dsn) as conn:
                return conn.execute("SELECT count(*) FROM products").fetchone()[0] == 2
        wait_for(synced)
        yield st


def _hq_metrics(stack) -> dict[tuple[str, tuple], float]:
    text = httpx.get(stack.hq_ops_url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _kpi(stack, name: str, **labels: str) -> float | None:
    return _hq_metrics(stack).get((name, tuple(sorted(labels.items()))))


def test_kpis_move_after_real_purchases_and_the_dashboards_show_them(stack, browser):
    site = stack.site
    # Before: the site is registered (its series exist) and has sold nothing.
    wait_for(lambda: _kpi(stack, "kameng_kpi_conversion_ratio", site=site) == 0.0)
    assert _kpi(stack, "kameng_kpi_orders", site=site, category="game") is None

    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    for _ in range(3):
        assert shop.get("/").status_code == 200  # 3 visits without a category
    for _ in range(2):
        assert shop.get("/p/steam-100").status_code == 200  # game visits
    # A buys twice (a repeat customer), B once; each checkout views the product page too.
    orders = [buy(stack, shop, "steam-100", "a@example.com"),
              buy(stack, shop, "steam-100", "a@example.com"),
              buy(stack, shop, "cmcc-50", "b@example.com")]
    for _oid, pay_url in orders:
        pay(pay_url)
    for oid, _ in orders:
        wait_for(lambda oid=oid: order_status(stack, oid) == "delivered", timeout=30)

    # A complaint: a refund asked after delivery becomes a dispute.
    partner = staff_client(stack.shop_url, stack.members["owner"])
    csrf = csrf_from(partner.get("/admin/orders").text)
    r = partner.post(f"/admin/orders/{orders[0][0]}/refund", data={"csrf": csrf})
    assert r.status_code == 303
    assert "disputed" in r.headers["location"]

    # HQ's gauges (money from HQ's payments; visits, customers and complaints reported).
    game, mobile = {"site": site, "category": "game"}, {"site": site, "category": "mobile"}
    wait_for(lambda: _kpi(stack, "kameng_kpi_visits", **game) == 4.0, timeout=20)
    wait_for(lambda: _kpi(stack, "kameng_kpi_complaints", **game) == 1.0, timeout=20)
    assert _kpi(stack, "kameng_kpi_orders", **game) == 2.0
    assert _kpi(stack, "kameng_kpi_orders", **mobile) == 1.0
    assert _kpi(stack, "kameng_kpi_gmv_yuan", **game) == pytest.approx(203.50)  # 2 × 101.75
    assert _kpi(stack, "kameng_kpi_gmv_yuan", **mobile) == pytest.approx(51.45)  # 49 × 1.05
    assert _kpi(stack, "kameng_kpi_visits", **mobile) == 1.0
    assert _kpi(stack, "kameng_kpi_visits", site=site, category="") == 3.0
    # 3 orders / 8 visits; A came back (1 of 2 paying customers); 1 dispute in 3 orders.
    assert _kpi(stack, "kameng_kpi_conversion_ratio", site=site) == pytest.approx(3 / 8)
    assert _kpi(stack, "kameng_kpi_repeat_customer_ratio", site=site) == pytest.approx(0.5)
    assert _kpi(stack, "kameng_kpi_complaint_ratio", site=site) == pytest.approx(1 / 3)
    assert _kpi(stack, "kameng_kpi_refund_ratio", site=site) == 0.0

    # HQ's dashboard page and the partner's own page say the same.
    hq = staff_client(stack.hq_url, "admin@hq.local")
    page = hq.get("/admin/kpis").text
    assert f'data-site="{site}" data-gmv="25495" data-orders="3" data-visits="8"' in page
    for chart in ("chart-gmv", "chart-trend", "chart-categories", "chart-conversion"):
        assert f'id="{chart}"' in page
    own = partner.get("/admin/kpis")
    assert own.status_code == 200
    assert 'data-gmv="25495" data-orders="3" data-visits="8" data-customers="2"' \
           ' data-repeat="1"' in own.text

    # Looked at, not only parsed.
    browser.login(stack.hq_url, "admin@hq.local", stack.password)
    browser.get(f"{stack.hq_url}/admin/kpis?lang=en")
    assert browser.exists("#chart-trend polyline")
    hq_shot = browser.screenshot("kpi-01-hq-dashboard")
    browser.login(stack.shop_url, stack.members["owner"], stack.password)
    browser.get(f"{stack.shop_url}/admin/kpis")
    assert browser.exists("#chart-gmv polyline")
    shop_shot = browser.screenshot("kpi-02-partner-kpis")
    for path in (hq_shot, shop_shot):
        assert path.stat().st_size > 10_000, path
    partner.close()
    hq.close()


def test_labels_stay_bounded(stack):
    # A tenant reporting a category HQ does not sell gets it counted under "other".
    r = httpx.post(stack.hq_url + hq_api.KPI_REPORT_PATH, headers=stack.api_headers(),
                   json={"days": [{"day": date.today().isoformat(),
                                   "category": "made-up-1", "visits": 5, "orders": 0,
                                   "customers": 0, "repeat_customers": 0, "complaints": 0}]},
                   timeout=10)
    assert r.status_code == 200
    # HQ's payments of a site no SubSite stands for make no series.
    with psycopg.connect(stack.hq_dsn) as conn:
        conn.execute("INSERT INTO payments (id, site, order_id, amount_fen, status, notify_url,"
                     " return_url, paid_at) VALUES ('Pghost', 'ghost', 'o1', 100, 'paid',"
                     " 'http://x/', 'http://x/', now())")
    wait_for(lambda: _kpi(stack, "kameng_kpi_visits", site=stack.site, category="other")
             == 5.0)
    series = _hq_metrics(stack)
    labels = [dict(k[1]) for k in series if k[0].startswith("kameng_kpi_")]
    assert not [lab for lab in labels if lab.get("category") == "made-up-1"]
    assert not [lab for lab in labels if lab.get("site") == "ghost"]


def test_report_needs_the_sites_token(stack):
    r = httpx.post(stack.hq_url + hq_api.KPI_REPORT_PATH, json={"days": []}, timeout=10)
    assert r.status_code in (401, 403)
    viewer = staff_client(stack.shop_url, stack.members["viewer"])
    assert viewer.get("/admin/kpis").status_code == 403
    viewer.close()
