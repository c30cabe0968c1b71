"""Pure parts of the storefront's services: the partner's withdrawal rule, coupon and
product forms, license refusals at HQ, and the one permission guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from kameng.contracts.hq_api import verify_notification
from kameng.contracts.license_token import LicenseClaims
from kameng.contracts.money import MoneyError
from kameng.contracts.siteconfig import Member, SiteConfig
from kameng_storefront.config import Settings
from kameng_storefront.crypto import DataCipher
from kameng_storefront.hq.catalog import product_from_form
from kameng_storefront.hq.notifications import notification_for
from kameng_storefront.hq.site_auth import license_refusal
from kameng_storefront.shop.backoffice import coupon_from_form, mask_contact, reconcile_csv
from kameng_storefront.shop.balance import WITHDRAWAL_LOCK_KEY, withdrawal_refusal
from kameng_storefront.shop.orders import coupon_discount
from kameng_storefront.state import AppState, state_of
from kameng_storefront.web.auth import requires
from kameng_storefront.web.page_cache import etag_matches
from kameng_storefront.web.staff import Staff


def test_withdrawal_rule():
    assert withdrawal_refusal(10_000, balance=50_000, minimum=10_000) is None
    assert withdrawal_refusal(50_000, balance=50_000, minimum=10_000) is None  # all of it
    assert withdrawal_refusal(9_999, balance=50_000, minimum=10_000) == "below_minimum"
    assert withdrawal_refusal(50_001, balance=50_000, minimum=10_000) == "exceeds_balance"
    # Below the minimum wins over "too much": the partner learns the first thing to fix.
    assert withdrawal_refusal(5, balance=0, minimum=10) == "below_minimum"
    assert withdrawal_refusal(10, balance=-1, minimum=10) == "exceeds_balance"
    assert isinstance(WITHDRAWAL_LOCK_KEY, int)


def test_coupon_discount_never_cuts_into_cost():
    assert coupon_discount(price=1000, cost=900, percent_off=5) == 50
    assert coupon_discount(price=1000, cost=900, percent_off=50) == 100  # clamped at margin
    assert coupon_discount(price=999, cost=0, percent_off=10) == 99  # integer fen, floor


def test_coupon_form():
    c = coupon_from_form({"code": " spring ", "percent_off": "10"})
    assert (c.code, c.percent_off, c.max_uses) == ("SPRING", 10, 100)
    for bad in ({"code": "", "percent_off": "10"}, {"code": "X", "percent_off": "91"},
                {"code": "X", "percent_off": "10", "max_uses": "0"}, {"code": "X"}):
        with pytest.raises((KeyError, ValueError)):
            coupon_from_form(bad)
    with pytest.raises(TypeError):
        coupon_from_form(None)  # type: ignore[arg-type]  # a form with a bad CSRF token


def test_product_form():
    p = product_from_form({"id": " g1 ", "category": "game", "face_value": "100.00",
                           "cost": "95.5"})
    assert (p.id, p.name_en, p.face_value, p.cost, p.region) == ("g1", "g1", 10000, 9550, "")
    with pytest.raises(MoneyError):
        product_from_form({"id": "g", "category": "c", "face_value": "1.001", "cost": "1"})
    with pytest.raises(ValueError, match="product"):
        product_from_form({"id": "g", "category": " ", "face_value": "1", "cost": "1"})


def test_masks_and_reconcile_csv():
    assert mask_contact("alice@example.com") == "al***om"
    assert mask_contact("abcd") == "***"
    rows = [{"id": "K1", "product_id": "g1", "status": "delivered", "amount_fen": 105,
             "unit_cost_fen": 95, "paid_at": "t1", "delivered_at": "t2", "refunded_at": None}]
    assert reconcile_csv(rows).splitlines() == [
        "order,product,status,amount_fen,cost_fen,paid_at,delivered_at,refunded_at",
        "K1,g1,delivered,105,95,t1,t2,",
    ]


def test_etag_matching():
    assert etag_matches('"a"', '"a"')
    assert etag_matches('"a"', 'W/"a", "b"')
    assert not etag_matches('"a"', "")


def _claims(**kw) -> LicenseClaims:
    now = datetime.now(UTC)
    base = dict(site="demo", categories=["game"], regions=["CN-31"],
                nbf=now - timedelta(hours=1), exp=now + timedelta(days=1),
                graceUntil=now + timedelta(days=2))
    base.update(kw)
    return LicenseClaims(**base)


def test_license_refusal_at_hq():
    now = datetime.now(UTC)
    assert license_refusal(_claims(), "demo", allow_read_only=False) is None
    assert license_refusal(_claims(), "other", allow_read_only=True) == "license_wrong_site"
    grace = _claims(exp=now - timedelta(hours=1))
    assert license_refusal(grace, "demo", allow_read_only=True) is None  # paid orders
    assert license_refusal(grace, "demo", allow_read_only=False) == "license_readOnly"
    assert license_refusal(_claims(suspended=True), "demo", True) == "license_suspended"


def test_notification_is_signed_by_the_contract():
    from kameng.contracts.hq_api import notification_headers

    payment = {"id": "P1", "site": "demo", "order_id": "K1", "amount_fen": 105,
               "currency": "CNY"}
    note = notification_for(payment)
    body = note.to_json()
    headers = {k.lower(): v for k, v in notification_headers("tok", body).items()}
    assert verify_notification("tok", headers, body) == note
    assert note.notification_id == "P1:paid"


def _app() -> Starlette:
    site = SiteConfig(site="demo", roles={"viewer": ["orders:read"]},
                      members=[Member(name="V", email="v@x", role="viewer")])
    settings = Settings(mode="subsite", site=site, database_url="", redis_url="",
                        session_secret="s", data_keys=DataCipher.generate_spec("k"),
                        public_url="http://t")

    @requires("orders:read")
    async def orders(request: Request, staff: Staff) -> Response:
        return PlainTextResponse(f"orders for {staff.email}")

    @requires("orders:refund")
    async def refund(request: Request, staff: Staff) -> Response:
        return PlainTextResponse("refunded")

    async def login(request: Request) -> Response:
        request.session["staff"] = request.query_params["as"]
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/orders", orders), Route("/refund", refund), Route("/login", login)],
        middleware=[Middleware(SessionMiddleware, secret_key="s")],
    )
    app.state.kameng = AppState(settings=settings, cipher=DataCipher(settings.data_keys))
    return app


def test_requires_guards_each_route_once(monkeypatch):
    from kameng_storefront.web import staff as staff_mod

    async def cookie_account(request: Request):
        # Stands in for the database session lookup (covered by the integration tests);
        # what is tested here is the guard and the config's roles.
        email = request.session.get("staff")
        return (email, False) if email else None

    monkeypatch.setattr(staff_mod, "_session_account", cookie_account)
    app = _app()
    assert state_of(app).effective_mode() == "normal"  # no guard configured in this test
    with TestClient(app) as client:
        r = client.get("/orders", follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/admin/login")
        client.get("/login", params={"as": "v@x"})
        assert client.get("/orders").text == "orders for v@x"
        assert client.get("/refund").status_code == 403
        client.get("/login", params={"as": "gone@x"})  # removed from the config
        assert client.get("/orders", follow_redirects=False).status_code == 303


def test_every_back_office_route_declares_its_permission():
    from starlette.routing import Route as _Route

    from kameng_storefront.shop import admin
    from kameng_storefront.web import auth

    login = {r.endpoint for r in (*auth.login_routes(), *auth.invitation_routes())}
    declared = {
        r.path: r.endpoint.permission  # type: ignore[attr-defined]
        for r in admin.routes() if isinstance(r, _Route) and r.endpoint not in login
    }
    assert all(declared.values()), declared
    assert declared["/orders/{oid}/refund"] == "orders:refund"
    assert declared["/withdrawals"] == "finance:withdraw"
    assert admin.dashboard.permission is None  # type: ignore[attr-defined]  # any staff


def test_refund_rule_is_one_pure_function_of_the_order_state():
    from kameng.contracts.refunds import REFUND_ACTIONS, REFUNDABLE_STATUSES, refund_action

    assert set(REFUND_ACTIONS) == {"refund", "dispute", "none"}
    assert set(REFUNDABLE_STATUSES) == {"paid", "frozen"}  # never "delivered"
    # Before delivery: the buyer gets the money back.
    assert refund_action("paid") == "refund"
    assert refund_action("frozen") == "refund"
    # After delivery the buyer holds the key: a dispute HQ decides, never a refund.
    assert refund_action("delivered") == "dispute"
    # HQ knows a key left for the order even when the shop never stored it.
    assert refund_action("paid", key_delivered=True) == "dispute"
    assert refund_action("frozen", key_delivered=True) == "dispute"
    # Nothing paid, or already done, or a state nobody knows: no money moves.
    for status in ("created", "refunded", "weird", ""):
        assert refund_action(status) == "none"
        assert refund_action(status, key_delivered=True) == "none"


def test_delivery_failure_policy_retries_transient_with_backoff_then_refunds():
    from kameng_storefront.shop.orders import RETRY_CAP_SECONDS, Refund, Retry, after_failure

    # Final refusals refund at once, whatever the attempt.
    for status, code in ((409, "out_of_stock"), (403, "out_of_license_scope"),
                         (404, "unknown_product"), (400, "bad_request"), (403, "")):
        step = after_failure(status, code, attempts=1, max_attempts=5, base_seconds=2)
        assert isinstance(step, Refund), (status, code)
        assert step.reason.startswith("refused:")
    # Transient ones back off exponentially, capped, ...
    delays = [after_failure(None, "", n, max_attempts=20, base_seconds=2) for n in (1, 2, 3)]
    assert delays == [Retry(2), Retry(4), Retry(8)]
    assert after_failure(503, "", 19, 20, 2) == Retry(RETRY_CAP_SECONDS)
    for status, code in ((403, "license_suspended"), (403, "license_superseded"),
                         (401, "unauthenticated"), (429, ""), (502, "")):
        assert isinstance(after_failure(status, code, 1, 5, 1), Retry), (status, code)
    # ... until the cap: then the buyer is refunded instead of waiting forever.
    step = after_failure(403, "license_suspended", attempts=5, max_attempts=5, base_seconds=1)
    assert step == Refund("gave_up:license_suspended")
    assert after_failure(None, "", 5, 5, 1) == Refund("gave_up:unreachable")


def test_sandbox_payments_need_an_explicit_enable():
    from kameng_storefront.config import ConfigError, sandbox_enabled

    assert sandbox_enabled({}) is False  # production default: off
    assert sandbox_enabled({"KAMENG_SANDBOX_PAYMENTS": "disabled"}) is False
    assert sandbox_enabled({"KAMENG_SANDBOX_PAYMENTS": "enabled"}) is True
    assert sandbox_enabled({"KAMENG_SANDBOX_PAYMENTS": " Enabled "}) is True
    for guess in ("true", "1", "yes", "enable"):
        with pytest.raises(ConfigError, match="KAMENG_SANDBOX_PAYMENTS"):
            sandbox_enabled({"KAMENG_SANDBOX_PAYMENTS": guess})
