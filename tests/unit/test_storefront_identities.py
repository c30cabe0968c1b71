"""Pure rules of staff identities: who may act on whom, what a password must be."""

from __future__ import annotations

import pytest

from kameng.contracts.siteconfig import DEFAULT_ROLES, PERMISSIONS
from kameng_storefront.web.staff import Staff, manage_refusal, password_problem

ALL = frozenset(PERMISSIONS)


def staff(role: str, perms) -> Staff:
    return Staff(f"{role}@x.example", role, frozenset(perms))


@pytest.mark.parametrize(("actor", "target", "refusal"), [
    ("site-admin", "finance", "manage_wider_refused"),  # the reported escalation
    ("site-admin", "operations", None),
    ("site-admin", "site-admin", "manage_self_refused"),
    ("finance", "operations", "manage_wider_refused"),
])
def test_standard_roles(actor, target, refusal):
    a = staff(actor, DEFAULT_ROLES[actor])
    other = f"{target}@x.example" if target != actor else a.email.upper()
    assert manage_refusal(a, other, frozenset(DEFAULT_ROLES[target])) == refusal


def test_owner_may_act_on_anyone_but_themselves():
    owner = staff("owner", ALL)
    for role, perms in DEFAULT_ROLES.items():
        assert manage_refusal(owner, f"{role}@x.example", frozenset(perms)) is None
    assert manage_refusal(owner, "someone@x.example", ALL) is None
    assert manage_refusal(owner, "owner@x.example", ALL) == "manage_self_refused"


def test_a_member_without_permissions_is_a_subset_of_everyone():
    assert manage_refusal(staff("m", {"members:manage"}), "v@x", frozenset()) is None


@pytest.mark.parametrize(("password", "problem"), [
    ("short", "password_too_short"),
    ("x" * 257, "password_too_long"),
    ("aaaaaaaaaaaaaaaa", "password_too_weak"),
    ("alice@x.example", "password_too_weak"),
    ("ALICE@X.EXAMPLE", "password_too_weak"),
    ("correct horse battery", None),
    ("密码是一个很长的短语吧对吗", None),
])
def test_password_rules(password, problem):
    assert password_problem(password, "alice@x.example") == problem


def test_a_shop_ignores_any_shared_bootstrap_password(tmp_path):
    from kameng.contracts import pod
    from kameng.contracts.siteconfig import SiteConfig
    from kameng_storefront.config import load_settings

    env = {pod.SITE_CONFIG_ENV: SiteConfig(site="demo").to_json(),
           pod.SECRETS_ROOT_ENV: str(tmp_path), pod.ADMIN_PASSWORD.env: "shared",
           pod.DB_DSN.env: "x", pod.REDIS_URL.env: "x", pod.SESSION_SECRET.env: "x",
           pod.DATA_KEYS.env: "x", pod.HQ_API_TOKEN.env: "x", pod.HQ_MASTER_SECRET.env: "x"}
    assert load_settings("subsite", env).admin_password is None
    assert load_settings("hq", env).admin_password == "shared"
    assert pod.ADMIN_PASSWORD.modes == ("hq",)
