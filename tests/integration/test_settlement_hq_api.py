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
from tests.support.storefront import run_stack, staff_client

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
        # The partner's finance page shows HQ's outcome of each withdrawal, and the
        # statements with their CSV; roles without finance see none of it.
        with psycopg.connect(st.shop_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO withdrawals (id, amount_fen, requested_by) VALUES"
                         " (1, 3000, 'finance'), (2, 1000, 'finance')")
        fin = staff_client(st.shop_url, st.members["finance"])
        page = fin.get("/admin/finance")
        assert page.status_code == 200
        html = page.text
        assert 'data-id="W1"' in html
        assert "<strong>voided</strong>" in html
        assert "<strong>held</strong>" in html
        assert 'id="hq-available">80.00' in html
        dl = fin.get("/admin/statements/2026-10-01.csv")
        assert dl.status_code == 200
        assert "O1,game-cards,100.00,0.00,10.00,90.00" in dl.text
        assert fin.get("/admin/statements/2026-09-01.csv").status_code == 404
        # HQ's back office: the list, the statement with its per-order breakdown, the CSV.
        hq = staff_client(st.hq_url, "admin@hq.local")
        listing = hq.get("/admin/statements")
        assert listing.status_code == 200
        assert f"/admin/statements/{site}/2026-10-01" in listing.text
        detail = hq.get(f"/admin/statements/{site}/2026-10-01")
        assert detail.status_code == 200
        assert 'data-k="gross">100.00' in detail.text
        assert 'data-k="share-game-cards">10.00' in detail.text
        # 90.00 net − 40.00 held in October (W1's void counts in the period it happened).
        assert 'data-k="closing">50.00' in detail.text
        assert hq.get(f"/admin/statements/{site}/2026-10-01.csv").text == csv.text
        assert hq.get(f"/admin/statements/{site}/nonsense").status_code == 404
        assert httpx.get(st.hq_url + "/admin/statements",
                         follow_redirects=False).status_code in (302, 303, 401)
        ops = staff_client(st.shop_url, st.members["operations"])
        assert ops.get("/admin/finance").status_code == 403
        assert ops.get("/admin/statements/2026-10-01.csv").status_code == 403
