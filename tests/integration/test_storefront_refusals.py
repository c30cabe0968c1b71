"""What HQ and the shop refuse, on the real servers (the license scope and payment
notifications; `test_storefront_hq_trust` has credentials and payments): a payment
notification for the wrong
amount, another site or another status changes no order; HQ refuses another site's
license token, opens no payment under a read-only license, and fulfils nothing outside
the license's regions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from kameng.contracts import hq_api
from kameng.contracts.hq_api import PaymentNotification, notification_headers
from kameng.contracts.hq_auth import notification_key, token_digest
from kameng.contracts.license_token import sign_token
from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    csrf_from,
    hq_add_product,
    hq_import_keys,
    record_paid_payment,
    run_stack,
    staff_client,
    wait_for,
)

pytestmark = pytest.mark.integration
_seq = itertools.count(100)  # HQ refuses a lower sequence than it has seen: always go up


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("trust")) as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        hq_add_product(hq, "sh-10", "game", "10.00", "9.50", region="CN-31")
        hq_add_product(hq, "bj-10", "game", "10.00", "9.50", region="CN-11")
        for pid in ("sh-10", "bj-10"):
            hq_import_keys(hq, pid, [f"{pid.upper()}-{i}" for i in range(5)])
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
        wait_for(lambda: "sh-10" in shop.get("/").text)
        yield st


def _hq_headers(stack, **claims) -> dict[str, str]:
    claims.setdefault("seq", next(_seq))
    return hq_api.site_headers(stack.site, state_of(stack.shop_app).settings.hq_api_token,
                               sign_token(stack.claims(**claims), stack.signing_key))


_paid: set[str] = set()


def _fulfil(stack, order: str, product: str, **claims) -> httpx.Response:
    # HQ hands out a key only against its own record of a paid payment: record one, so
    # what is refused here is the license's scope, nothing else.
    if order not in _paid:
        record_paid_payment(stack, order, 1000)
        _paid.add(order)
    return httpx.post(stack.hq_url + hq_api.FULFIL_PATH, headers=_hq_headers(stack, **claims),
                      json={"order_id": order, "product_id": product})


def test_hq_refuses_another_sites_license_token(stack):
    r = _fulfil(stack, "T1", "sh-10", site="someone-else")
    assert (r.status_code, r.json()) == (403, {"error": "license_wrong_site"})
    assert _fulfil(stack, "T1", "sh-10").status_code == 200  # the site's own token works


def test_hq_fulfils_only_inside_the_license_regions(stack):
    r = _fulfil(stack, "T2", "bj-10")  # licensed: CN-31 only
    assert (r.status_code, r.json()) == (403, {"error": "out_of_license_scope"})
    r = _fulfil(stack, "T3", "bj-10", regions=["CN-31", "CN-11"])
    assert r.status_code == 200
    assert r.json()["secret"].startswith("BJ-10-")


def test_no_payment_under_a_read_only_license(stack):
    # URLs on the site's registered URL (HQ refuses any other).
    body = {"order_id": "PAY-RO", "amount": 1000,
            "notify_url": stack.shop_url + hq_api.NOTIFY_PATH, "return_url": stack.shop_url + "/"}
    now = datetime.now(UTC)
    grace = {"exp": now - timedelta(hours=1), "graceUntil": now + timedelta(days=2)}
    r = httpx.post(stack.hq_url + hq_api.PAYMENTS_PATH, headers=_hq_headers(stack, **grace),
                   json=body)
    assert (r.status_code, r.json()) == (403, {"error": "license_readOnly"})
    with psycopg.connect(stack.hq_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM payments WHERE order_id = 'PAY-RO'"
                            ).fetchone()[0] == 0
    # In grace a paid order still gets its key (the customer already paid).
    assert _fulfil(stack, "T4", "sh-10", **grace).status_code == 200
    # And in force the same payment opens.
    r = httpx.post(stack.hq_url + hq_api.PAYMENTS_PATH, headers=_hq_headers(stack), json=body)
    assert r.status_code == 200


def _new_order(stack) -> tuple[str, int]:
    # The shop's own token must be the newest HQ has seen (the tests above sent higher).
    seq = next(_seq)
    stack.write_license(sign_token(stack.claims(seq=seq), stack.signing_key))
    guard = state_of(stack.shop_app).license
    wait_for(lambda: guard.mode() == "normal" and guard.claims.seq == seq, timeout=30)
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    token = csrf_from(shop.get("/lookup").text)
    r = shop.post("/checkout", data={"csrf": token, "product": "sh-10", "contact": "t@x.y"})
    assert r.status_code == 303
    with psycopg.connect(stack.shop_dsn) as conn:
        oid, amount = conn.execute(
            "SELECT id, amount_fen FROM orders ORDER BY created_at DESC LIMIT 1").fetchone()
    return oid, amount


def _notify(stack, n: int, **fields) -> httpx.Response:
    body = PaymentNotification(**{"notification_id": f"N-{n}", "payment_id": f"P-{n}",
                                  "site": stack.site, "status": "paid", **fields}).to_json()
    # HQ signs with the key derived from the digest of the site's token.
    secret = notification_key(token_digest(state_of(stack.shop_app).settings.hq_api_token))
    return httpx.post(stack.shop_url + hq_api.NOTIFY_PATH, content=body,
                      headers=notification_headers(secret, body))


def _status(stack, oid: str) -> str:
    with psycopg.connect(stack.shop_dsn) as conn:
        return conn.execute("SELECT status FROM orders WHERE id = %s", (oid,)).fetchone()[0]


def test_notification_amount_site_and_status_are_checked(stack):
    oid, amount = _new_order(stack)
    r = _notify(stack, 1, order_id=oid, amount=amount + 1)  # one fen more
    assert (r.status_code, r.json()) == (409, {"error": "mismatch"})
    r = _notify(stack, 2, order_id=oid, amount=amount - 1)  # one fen less
    assert (r.status_code, r.json()) == (409, {"error": "mismatch"})
    r = _notify(stack, 3, order_id=oid, amount=amount, site="someone-else")
    assert r.json() == {"result": "ignored"}
    for n, status in ((4, "refunded"), (5, "failed"), (6, "created")):
        assert _notify(stack, n, order_id=oid, amount=amount, status=status).json() == {
            "result": "ignored"}
    assert _status(stack, oid) == "created"  # none of them paid the order
    # Signed with another site's token: rejected before anything is read.
    body = PaymentNotification(notification_id="N-7", payment_id="P-7", site=stack.site,
                               order_id=oid, amount=amount, status="paid").to_json()
    r = httpx.post(stack.shop_url + hq_api.NOTIFY_PATH, content=body,
                   headers=notification_headers("not-the-sites-token", body))
    assert (r.status_code, r.json()) == (401, {"error": "rejected"})
    assert _status(stack, oid) == "created"
    # The right one pays it.
    assert _notify(stack, 8, order_id=oid, amount=amount).status_code == 200
    assert _status(stack, oid) != "created"
