"""Headless Chromium clicks through a purchase on the sub-site (no JavaScript needed by the
shop), looks at HQ's catalogue and admin and the partner's finance page, and saves a
screenshot of every page to artifacts/screenshots/.

Drives Debian's ``chromium`` through ``chromedriver`` with a minimal W3C WebDriver client
over httpx, so no browser-automation dependency is needed.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.browser import WebDriver, browser_fixture  # noqa: F401 - the fixture
from tests.support.storefront import (
    forbidden_messages,
    hq_add_product,
    hq_import_keys,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("lic")) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "steam-100", "game", "100.00", "92.50")
        hq_add_product(hq, "cmcc-50", "mobile", "50.00", "49.00", region="CN-31")
        hq_import_keys(hq, "steam-100", ["STEAM-BROWSER-0001", "STEAM-BROWSER-0002"])
        hq_import_keys(hq, "cmcc-50", ["CMCC-0001"])
        wait_for(lambda: "cmcc-50" in httpx.get(f"{st.shop_url}/").text)
        yield st


def test_click_through_purchase(stack, browser):
    shots = []
    browser.get(f"{stack.shop_url}/")
    assert browser.exists('[data-product="steam-100"]')
    shots.append(browser.screenshot("01-catalog-zh"))
    browser.get(f"{stack.shop_url}/?lang=en")
    shots.append(browser.screenshot("02-catalog-en"))

    browser.click("#buy-steam-100")
    wait_for(lambda: browser.url.endswith("/p/steam-100"), timeout=15, interval=0.2)
    assert browser.text("#price") == "¥101.75"
    browser.type("#contact", "browser-buyer@example.com")
    shots.append(browser.screenshot("03-product-checkout"))
    browser.click("#place-order")
    wait_for(lambda: browser.url.startswith(f"{stack.hq_url}/pay/"), timeout=15, interval=0.2)
    assert "101.75" in browser.text("#amount")
    shots.append(browser.screenshot("04-hq-sandbox-payment"))
    browser.click("#pay")
    # The click returns when the POST is sent; the redirect lands a moment later.
    wait_for(lambda: browser.url.startswith(f"{stack.shop_url}/order/"), timeout=15,
             interval=0.2)
    order_url = browser.url

    def delivered() -> bool:
        browser.get(order_url)
        return browser.exists("#card-key")

    wait_for(delivered, timeout=20, interval=0.5)
    assert browser.text("#card-key").startswith("STEAM-BROWSER-")
    shots.append(browser.screenshot("05-order-delivered"))

    browser.get(f"{stack.shop_url}/lookup")
    shots.append(browser.screenshot("06-order-lookup"))

    browser.get(f"{stack.shop_url}/admin/login")
    browser.type("input[name=email]", stack.members["site-admin"])
    browser.type("input[name=password]", stack.password)
    browser.click("#login")
    wait_for(lambda: browser.url.endswith("/admin"), timeout=15, interval=0.2)
    browser.get(f"{stack.shop_url}/admin/orders")
    assert "delivered" in browser.text("main")
    shots.append(browser.screenshot("07-admin-orders"))
    browser.get(f"{stack.shop_url}/admin/finance")  # site-admin has no finance permission
    # The permission page itself, not any error page (CSRF, license, not found).
    assert browser.text("#error") in forbidden_messages()
    shots.append(browser.screenshot("08-admin-forbidden"))

    for path in shots:
        assert path.stat().st_size > 5_000, path  # a real rendered page, not an empty PNG


def test_hq_pages_and_partner_finance(stack, browser):
    shots = []
    browser.get(f"{stack.hq_url}/?lang=en")
    assert "steam-100 card" in browser.text("main")  # the English name (?lang=en)
    assert "100.00" in browser.text("main")  # face value rendered through the money filter
    shots.append(browser.screenshot("09-hq-catalog"))

    browser.get(f"{stack.hq_url}/admin/login")
    browser.type("input[name=email]", "admin@hq.local")
    browser.type("input[name=password]", stack.password)
    browser.click("#login")
    wait_for(lambda: browser.url.endswith("/admin"), timeout=15, interval=0.2)
    assert browser.exists('.stock[data-product="cmcc-50"]')
    assert "92.50" in browser.text("main")  # HQ cost column
    shots.append(browser.screenshot("10-hq-admin"))

    browser.get(f"{stack.shop_url}/admin/login")
    browser.type("input[name=email]", stack.members["owner"])
    browser.type("input[name=password]", stack.password)
    browser.click("#login")
    wait_for(lambda: browser.url.endswith("/admin"), timeout=15, interval=0.2)
    browser.get(f"{stack.shop_url}/admin/finance")
    assert browser.exists("#balance")
    shots.append(browser.screenshot("11-partner-finance"))

    for path in shots:
        assert path.stat().st_size > 5_000, path


def _login(browser: WebDriver, base: str, email: str, password: str) -> None:
    browser.login(base, email, password)


def test_invitation_password_and_members_pages(stack, browser):
    shots = []
    _login(browser, stack.shop_url, stack.members["site-admin"], stack.password)
    browser.get(f"{stack.shop_url}/admin/members?lang=en")
    # site-admin lacks finance rights: no reset offered for the finance member.
    assert "has rights you lack" in browser.text("main")
    browser.click(f'tr[data-email="{stack.members["operations"]}"] button')
    wait_for(lambda: browser.exists("#invitation-link"), timeout=15, interval=0.2)
    link = browser.text("#invitation-link")
    assert "/admin/invite/" in link
    shots.append(browser.screenshot("12-admin-members-reset"))

    browser.get(link)
    assert browser.text("#invited-email") == stack.members["operations"]
    # Long enough for the form's own check, too weak for the shop's rules.
    browser.type("input[name=password]", "aaaaaaaaaaaaaaaa")
    browser.type("input[name=confirm]", "aaaaaaaaaaaaaaaa")
    shots.append(browser.screenshot("13-invitation-set-password"))
    browser.click("#set-password")
    wait_for(lambda: browser.exists("#problem"), timeout=15, interval=0.2)
    shots.append(browser.screenshot("14-invitation-rule-broken"))
    browser.type("input[name=password]", "operations own phrase")
    browser.type("input[name=confirm]", "operations own phrase")
    browser.click("#set-password")
    wait_for(lambda: browser.url.endswith("/admin?msg=password+set"), timeout=15, interval=0.2)

    browser.get(f"{stack.shop_url}/admin/password")
    browser.type("input[name=current]", "not my password")
    browser.type("input[name=new]", "a brand new phrase")
    browser.type("input[name=confirm]", "a brand new phrase")
    browser.click("#change-password")
    wait_for(lambda: browser.exists("#problem"), timeout=15, interval=0.2)
    shots.append(browser.screenshot("15-password-change-wrong-current"))
    browser.type("input[name=current]", "operations own phrase")
    browser.type("input[name=new]", "a brand new phrase")
    browser.type("input[name=confirm]", "a brand new phrase")
    browser.click("#change-password")
    wait_for(lambda: browser.url.endswith("/admin?msg=password+changed"), timeout=15,
             interval=0.2)

    browser.get(link)  # used: the page says so
    assert "already been used" in browser.text("#problem")
    shots.append(browser.screenshot("16-invitation-used"))
    for path in shots:
        assert path.stat().st_size > 5_000, path


def test_wallet_pages(stack, browser):
    """A customer signs up, tops up through HQ's sandbox page, pays from the balance and
    sees the movements; the back office sees the wallet."""
    shots = []
    browser.get(f"{stack.shop_url}/account/signup?lang=en")
    browser.type("#email", "wallet-buyer@example.com")
    browser.type("#password", "wallet buyer phrase")
    browser.type("#confirm", "wallet buyer phrase")
    shots.append(browser.screenshot("17-customer-signup"))
    browser.click("#submit")
    wait_for(lambda: browser.url.endswith("/account"), timeout=15, interval=0.2)
    assert browser.text("#balance") == "0.00"
    browser.type("#topup-amount", "abc")
    browser.click("#topup")
    wait_for(lambda: browser.exists("#problem"), timeout=15, interval=0.2)
    shots.append(browser.screenshot("18-wallet-topup-refused"))
    browser.type("#topup-amount", "60")
    browser.click("#topup")
    wait_for(lambda: browser.url.startswith(f"{stack.hq_url}/pay/"), timeout=15, interval=0.2)
    assert "60.00" in browser.text("#amount")
    shots.append(browser.screenshot("19-hq-topup-payment"))
    browser.click("#pay")
    wait_for(lambda: browser.url.startswith(f"{stack.shop_url}/account"), timeout=15,
             interval=0.2)

    def credited() -> bool:
        browser.get(f"{stack.shop_url}/account")
        return browser.text("#balance") == "60.00"

    wait_for(credited, timeout=20, interval=0.5)
    browser.get(f"{stack.shop_url}/p/cmcc-50")
    assert browser.exists("#pay-wallet")
    shots.append(browser.screenshot("20-product-pay-from-balance"))
    browser.click("#pay-wallet")
    wait_for(lambda: "/order/" in browser.url, timeout=15, interval=0.2)
    order_url = browser.url

    def delivered() -> bool:
        browser.get(order_url)
        return browser.exists("#card-key")

    wait_for(delivered, timeout=20, interval=0.5)
    assert browser.text("#card-key") == "CMCC-0001"
    browser.get(f"{stack.shop_url}/account")
    assert browser.text("#balance") == "8.55"  # 60.00 − 51.45 (cost 49.00 + 5 %)
    assert len(browser._cmd("POST", "/elements", {"using": "css selector",
                                                  "value": "#movements tr"})) == 3
    shots.append(browser.screenshot("21-wallet-movements"))

    browser.get(f"{stack.shop_url}/p/steam-100")  # 101.75 > 8.55: refused, said why
    browser.click("#pay-wallet")
    wait_for(lambda: "balance" in browser.text("main").lower(), timeout=15, interval=0.2)
    shots.append(browser.screenshot("22-wallet-insufficient"))

    _login(browser, stack.shop_url, stack.members["site-admin"], stack.password)
    browser.get(f"{stack.shop_url}/admin/customers")
    assert "wa***om" in browser.text("#wallets")  # masked like every contact there
    shots.append(browser.screenshot("23-admin-customer-wallets"))
    browser.click("#wallets a")
    wait_for(lambda: browser.url.endswith("/wallet"), timeout=15, interval=0.2)
    assert browser.text("#balance") == "8.55"
    shots.append(browser.screenshot("24-admin-customer-wallet"))
    for path in shots:
        assert path.stat().st_size > 5_000, path


def _post_closed_october(stack) -> None:
    """A closed October statement for the stack's site in HQ's ledger, as the settlement
    worker makes it: two categories, a partial refund, a withdrawal and the base fee."""
    import asyncio
    from datetime import UTC, datetime

    import psycopg

    from kameng.contracts.events import OrderEvent
    from kameng.ledger import repo, statements
    from kameng.ledger.rules import Rates

    oct_ = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
    rates = Rates(share_bp={"game": 800, "mobile": 250}, base_annual_fee=1_200_000,
                  period="Monthly", license=stack.site)

    def ev(kind: str, oid: str, fen: int, cat: str = "game") -> OrderEvent:
        return OrderEvent.for_order(kind, site=stack.site, order_id=oid, amount=fen,
                                    category=cat, ts=oct_)

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(stack.hq_dsn, autocommit=True) as c:
            await repo.migrate(c)
            await repo.post_events(c, [
                ev("order.paid", "K20261015A", 10000), ev("order.paid", "K20261015B", 5000,
                                                          "mobile"),
                ev("order.paid", "K20261015C", 2_000_000),
                ev("order.refunded", "K20261015A", 2500)], {stack.site: rates})
            await repo.post_events(c, [ev("withdrawal.requested", "W900", 300000, "")],
                                   {stack.site: rates})
            await statements.close(c, stack.site, rates, datetime(2026, 10, 1, tzinfo=UTC))

    asyncio.run(go())


def test_statement_pages(stack, browser):
    """HQ's statements (empty, the list, one statement) and the partner's finance page
    with the closed statement: amounts in yuan, labels translated, a total line."""
    shots = []
    browser.clear_cookies(stack.hq_url)
    _login(browser, stack.hq_url, "admin@hq.local", stack.password)
    browser.get(f"{stack.hq_url}/admin/statements?lang=en")
    assert "No closed statement yet" in browser.text("#no-statements")
    shots.append(browser.screenshot("25-hq-statements-empty"))
    _post_closed_october(stack)
    browser.get(f"{stack.hq_url}/admin/statements?lang=en")
    row = browser.text("#statements tr.statement")
    assert "2026-10-01 – 2026-11-01" in row, row
    assert "20150.00" in row  # gross: 100.00 + 50.00 + 20 000.00, in yuan, not fen
    shots.append(browser.screenshot("26-hq-statements"))
    browser.click("#statements tr.statement a")
    wait_for(lambda: "/admin/statements/" in browser.url, timeout=15, interval=0.2)
    figures = browser.text("#figures")
    for label in ("Opening balance", "Gross sales", "Refunds", "HQ revenue share · game",
                  "Base fee (pro rata)", "Net payable", "Withdrawals", "Closing balance"):
        assert label in figures, (label, figures)
    assert browser.text('[data-k="gross"]') == "20150.00"
    assert browser.text('[data-k="refunds"]') == "25.00"
    # 8 % of 100.00 and of 20 000.00, less 2.00 given back; 2.5 % of 50.00.
    assert browser.text('[data-k="share-game"]') == "1606.00"
    assert browser.text('[data-k="share-mobile"]') == "1.25"
    assert browser.text('[data-k="base_fee"]') == "1000.00"
    assert browser.text('[data-k="net_payable"]') == "17517.75"
    assert browser.text('[data-k="closing"]') == "14517.75"
    assert "K20261015C" in browser.text("#orders")
    shots.append(browser.screenshot("27-hq-statement"))
    browser.get(f"{stack.hq_url}/admin/statements?lang=zh-CN")
    assert "销售总额" in browser.text("#statements")
    shots.append(browser.screenshot("28-hq-statements-zh"))

    browser.clear_cookies(stack.shop_url)
    _login(browser, stack.shop_url, stack.members["owner"], stack.password)
    browser.get(f"{stack.shop_url}/admin/finance?lang=en")
    wait_for(lambda: browser.exists("#settlement tr.statement"), timeout=15, interval=0.3)
    st = browser.text("#settlement")
    for figure in ("2026-10-01 – 2026-11-01", "17517.75", "14517.75"):
        assert figure in st, (figure, st)
    shots.append(browser.screenshot("29-partner-statements"))
    for path in shots:
        assert path.stat().st_size > 5_000, path
