"""Every role × every admin action → allowed or refused (403) exactly as the site config's
role permissions say. Roles: the standard policy (site-admin, operations, finance) plus an
all-permission owner and a no-permission viewer."""

from __future__ import annotations

import secrets

import httpx
import psycopg
import pytest

from kameng.contracts.siteconfig import DEFAULT_ROLES, PERMISSIONS
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    admin_csrf,
    assert_forbidden_page,
    csrf_from,
    run_stack,
    staff_client,
)

pytestmark = pytest.mark.integration

ROLES = {**DEFAULT_ROLES, "owner": list(PERMISSIONS), "viewer": []}

# (method, path, permission, form) — written independently of the app's own code.
ACTIONS = [
    ("GET", "/admin/products", "catalog:read", None),
    ("POST", "/admin/catalog/sync", "catalog:write", {}),
    ("GET", "/admin/orders", "orders:read", None),
    ("POST", "/admin/orders/K-NONE/refund", "orders:refund", {}),
    ("GET", "/admin/customers", "customers:read", None),
    ("POST", "/admin/customers/block", "customers:manage", {"contact": "spam@example.com"}),
    ("GET", "/admin/marketing", "marketing:manage", None),
    ("POST", "/admin/coupons", "marketing:manage", {"code": "{role}10", "percent_off": "10"}),
    ("POST", "/admin/announcements", "marketing:manage", {"title": "by {role}", "body": "x"}),
    ("GET", "/admin/finance", "finance:read", None),
    ("POST", "/admin/withdrawals", "finance:withdraw", {"amount": "100.00"}),
    ("GET", "/admin/reconcile", "finance:reconcile", None),
    ("GET", "/admin/settings", "settings:write", None),
    ("POST", "/admin/settings", "settings:write", {"support_contact": "qq:{role}"}),
    ("GET", "/admin/members", "members:manage", None),
    # A spare member with no permission: every manager may reset it, and resetting it
    # ends no session the matrix still uses.
    ("POST", "/admin/members/reset", "members:manage", {"email": "spare@{site}.example"}),
    ("GET", "/admin/tickets", "support:tickets", None),
    ("GET", "/admin/kpis", "reports:read", None),
    ("GET", "/admin/plan", "reports:read", None),
]


def test_every_permission_is_exercised():
    assert {a[2] for a in ACTIONS} == set(PERMISSIONS)


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    site = f"r{secrets.token_hex(4)}"
    members = [{"name": "spare", "email": f"spare@{site}.example", "role": "viewer"},
               *({"name": r, "email": f"{r}@{site}.example", "role": r} for r in ROLES)]
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("lic"), site=site,
                   config_overrides={"members": members}) as st:
        assert set(st.members) == set(ROLES)
        st.clients = {}  # type: ignore[attr-defined]
        yield st
        for c in st.clients.values():
            c.close()


def _client(stack, role: str) -> httpx.Client:
    if role not in stack.clients:
        stack.clients[role] = staff_client(stack.shop_url, stack.members[role])
    return stack.clients[role]


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize(("method", "path", "permission", "form"), ACTIONS,
                         ids=[f"{m} {p}" for m, p, _, _ in ACTIONS])
def test_role_action_matrix(stack, role, method, path, permission, form):
    client = _client(stack, role)
    if method == "GET":
        r = client.get(path)
    else:
        data = {k: v.format(role=role.upper().replace("-", ""), site=stack.site)
                for k, v in form.items()}
        r = client.post(path, data={"csrf": admin_csrf(client), **data})
    allowed = permission in ROLES[role]
    if allowed:
        assert r.status_code in (200, 303), (role, path, r.status_code)
        if r.status_code == 303:
            assert r.headers["location"].startswith("/admin")
            assert "/admin/login" not in r.headers["location"]
    else:
        assert r.status_code == 403, (role, path, r.status_code)
        assert_forbidden_page(r.text)


def test_refused_action_has_no_effect(stack):
    finance = _client(stack, "finance")
    r = finance.post("/admin/coupons", data={"csrf": admin_csrf(finance), "code": "FREE90",
                                              "percent_off": "90"})
    assert r.status_code == 403
    assert_forbidden_page(r.text)
    with psycopg.connect(stack.shop_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM coupons WHERE code = 'FREE90'").fetchone()[0] == 0


def test_anonymous_is_sent_to_login_and_csrf_is_checked(stack):
    anon = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    for method, path, _, _ in ACTIONS:
        r = anon.get(path) if method == "GET" else anon.post(path, data={})
        assert r.status_code == 303, path
        assert r.headers["location"] == "/admin/login"
    owner = _client(stack, "owner")
    r = owner.post("/admin/coupons", data={"csrf": "forged", "code": "X1", "percent_off": "5"})
    assert r.status_code == 400


def test_wrong_password_refused(stack):
    c = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url)
    token = csrf_from(c.get("/admin/login").text)
    r = c.post("/admin/login", data={"csrf": token, "email": stack.members["owner"],
                                     "password": "wrong-password"})
    assert r.status_code == 401
    assert c.get("/admin/orders").status_code == 303


def test_withdrawal_minimum_and_balance(stack):
    finance = _client(stack, "finance")
    r = finance.post("/admin/withdrawals", data={"csrf": admin_csrf(finance), "amount": "1.00"})
    assert "below+minimum" in r.headers["location"]
    r = finance.post("/admin/withdrawals", data={"csrf": admin_csrf(finance), "amount": "500.00"})
    assert "exceeds+balance" in r.headers["location"]
    with psycopg.connect(stack.shop_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM withdrawals").fetchone()[0] == 0
