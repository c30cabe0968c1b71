"""The shop's window on HQ's ledger: ``GET /api/v1/settlement`` (available balance,
withdrawal outcomes, statements) and a closed statement as CSV, with the site's token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from kameng.contracts.hq_api import SETTLEMENT_PATH, STATEMENT_CSV_PATH
from kameng.ledger import repo, statements
from kameng.ledger.payouts import settle_withdrawals
from kameng.payouts import SandboxPayoutProvider
from kameng.workers.settlement.licenses import LicenseBook
from kameng_storefront.state import state_of
from tests.support.ledger import event, license_obj, setup_ledger
from tests.support.storefront import run_stack

pytestmark = pytest.mark.integration
OCT = datetime(2026, 10, 5, tzinfo=UTC)


def test_shop_sees_withdrawal_outcomes_and_statements_through_hq(pg_admin_dsn, redis_url,
                                                                  tmp_path):
    with run_stack(pg_admin_dsn, redis_url, tmp_path) as st:
        site = st.site
        book = LicenseBook()
        book.set([license_obj(site, shares={"game-cards": "10"}, fee="0")])
        # Payouts of W2 are "held" by the license for this round, W1's exceed the
        # sandbox's limit and are voided.
        async def ledger() -> None:
            from kameng.contracts.events import OrderEvent
            await setup_ledger(st.hq_dsn)
            async with await psycopg.AsyncConnection.connect(st.hq_dsn, autocommit=True) as c:
                evs = [OrderEvent.from_fields(f) for f in (
                    event("order.paid", site, "O1", 10000, ts=OCT),
                    event("withdrawal.requested", site, "W1", 3000, category="", ts=OCT),
                    event("withdrawal.requested", site, "W2", 1000, category="", ts=OCT))]
                await repo.post_events(c, evs, {site: book.rates(site)})
                prov = SandboxPayoutProvider(
                    lambda: psycopg.AsyncConnection.connect(st.hq_dsn), limit_fen=2000)
                await settle_withdrawals(c, prov, lambda s: False, book.rates, limit=1)
                await settle_withdrawals(c, prov, lambda s: True, book.rates)
                await statements.close(c, site, book.rates(site), OCT.replace(day=1))

        asyncio.run(ledger())
        headers = st.api_headers(state_of(st.shop_app).guard().token)
        r = httpx.get(st.hq_url + SETTLEMENT_PATH, headers=headers)
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["available"] == 9000 - 1000  # W1 voided back, W2 still on hold
        assert {w["withdrawal_id"]: w["status"] for w in view["withdrawals"]} == {
            "W1": "voided", "W2": "held"}
        assert "limit" in next(w["reason"] for w in view["withdrawals"]
                               if w["withdrawal_id"] == "W1")
        assert view["statements"][0]["period_start"] == "2026-10-01"
        csv = httpx.get(st.hq_url + STATEMENT_CSV_PATH.format(period="2026-10-01"),
                        headers=headers)
        assert csv.status_code == 200
        assert csv.headers["content-type"].startswith("text/csv")
        assert "O1,game-cards,100.00,0.00,10.00,90.00" in csv.text
        assert httpx.get(st.hq_url + STATEMENT_CSV_PATH.format(period="2026-09-01"),
                         headers=headers).status_code == 404
        assert httpx.get(st.hq_url + SETTLEMENT_PATH).status_code == 401
