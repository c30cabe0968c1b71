"""Identities and sessions on real PostgreSQL/Redis: no shared password, one-time
invitations, self-service password change, sessions that end at logout and at a password
change, HQ's bootstrap replaced at first login, and a member manager who can never act on
an account with rights beyond their own (or on their own account)."""

from __future__ import annotations

import secrets
import threading
import time

import httpx
import psycopg
import pytest

from kameng.contracts import invitation
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    HQ_ADMIN,
    admin_csrf,
    change_password,
    csrf_from,
    redeem_invitation,
    run_stack,
    staff_client,
)

pytestmark = pytest.mark.integration

# What every member of an old-style shop shared; the shop must ignore it now.
SHARED = "shared-bootstrap-password"
PW = "a pass phrase of my own"
EXTRA = {"alice": "viewer", "bob": "viewer", "carol": "operations", "dave": "viewer",
         "erin": "viewer", "frank": "operations", "gina": "viewer"}


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    site = f"i{secrets.token_hex(4)}"
    roles = ["owner", "site-admin", "operations", "finance", "viewer"]
    members = [{"name": n, "email": f"{n}@{site}.example", "role": n} for n in roles]
    members += [{"name": n, "email": f"{n}@{site}.example", "role": r} for n, r in EXTRA.items()]
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("ident"), site=site,
                   config_overrides={"members": members}, set_passwords=False,
                   shop_overrides={"admin_password": SHARED}) as st:
        yield st


def email(stack, name: str) -> str:
    return f"{name}@{stack.site}.example"


def login(base_url: str, who: str, password: str) -> httpx.Response:
    c = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_from(c.get("/admin/login").text)
    return c.post("/admin/login", data={"csrf": token, "email": who, "password": password})


def invite_path(token: str) -> str:
    return httpx.URL(invitation.invitation_url("http://x", token)).raw_path.decode()


def post_invite(stack, token: str, password: str, confirm: str | None = None
                ) -> tuple[httpx.Client, httpx.Response]:
    c = httpx.Client(base_url=stack.shop_url, timeout=30)
    page = c.get(invite_path(token))
    csrf = csrf_from(page.text) if page.status_code == 200 else csrf_from(
        c.get("/admin/login").text)
    r = c.post(invite_path(token), data={"csrf": csrf, "password": password,
                                         "confirm": password if confirm is None else confirm})
    return c, r


def member_client(stack, name: str) -> httpx.Client:
    return redeem_invitation(stack.shop_url, stack.invite(email(stack, name)), PW)


# --- item 1: every member has their own credential -----------------------------------------

def test_no_shared_bootstrap_password_opens_a_shop(stack):
    for name in ("owner", "finance", "viewer"):
        assert login(stack.shop_url, email(stack, name), SHARED).status_code == 401
    with psycopg.connect(stack.shop_dsn) as conn:
        hashes = conn.execute("SELECT count(*) FROM staff WHERE password_hash IS NOT NULL"
                              ).fetchone()[0]
    assert hashes == 0


def test_an_invitation_sets_the_members_own_password_once(stack):
    token = stack.invite(email(stack, "alice"))
    c = httpx.Client(base_url=stack.shop_url, timeout=30)
    page = c.get(invite_path(token))
    assert page.status_code == 200
    assert email(stack, "alice") in page.text
    assert page.headers["cache-control"] == "no-store"
    # A rule broken: the page says why and the invitation stays usable.
    r = c.post(invite_path(token), data={"csrf": csrf_from(page.text), "password": "short",
                                         "confirm": "short"})
    assert r.status_code == 400
    assert 'id="problem"' in r.text
    r = c.post(invite_path(token), data={"csrf": csrf_from(page.text), "password": PW,
                                         "confirm": PW + "x"})
    assert r.status_code == 400
    r = c.post(invite_path(token), data={"csrf": csrf_from(page.text), "password": PW,
                                         "confirm": PW})
    assert r.status_code == 303
    assert c.get("/admin").status_code == 200  # logged in
    assert login(stack.shop_url, email(stack, "alice"), PW).status_code == 303
    # Once only.
    assert c.get(invite_path(token)).status_code == 410
    _, again = post_invite(stack, token, "another pass phrase")
    assert again.status_code == 410
    assert login(stack.shop_url, email(stack, "alice"), "another pass phrase").status_code == 401


def _forged(stack, **claims) -> str:
    base = dict(site=stack.site, member="dave", email=email(stack, "dave"),
                nonce=secrets.token_urlsafe(8), iat=time.time(), exp=time.time() + 600)
    base.update(claims)
    key = invitation.invitation_key(stack.shop_session_secret)
    return invitation.sign(invitation.InvitationClaims(**base), key)


def test_only_a_genuine_current_invitation_for_a_listed_member_works(stack):
    good = stack.invite(email(stack, "dave"))
    body, _, mac = good.partition(".")
    wrong_key = invitation.issue("another-session-secret", stack.site, "dave",
                                 email(stack, "dave"))
    refused = {
        "tampered signature": f"{body}.{mac[:-3]}{'B' if mac[-3] == 'A' else 'A'}{mac[-2:]}",
        "another site's key": wrong_key,
        "another site": _forged(stack, site="elsewhere"),
        "not a member": _forged(stack, member="mallory", email=f"mallory@{stack.site}.example"),
        "name and e-mail of two members": _forged(stack, member="dave",
                                                  email=email(stack, "owner")),
        "expired": _forged(stack, iat=time.time() - 7200, exp=time.time() - 3600),
        "garbage": "not-a-token",
    }
    for what, token in refused.items():
        page = httpx.get(stack.shop_url + invite_path(token))
        assert page.status_code in (404, 410), what
        _, r = post_invite(stack, token, PW)
        assert r.status_code in (404, 410), what
    assert login(stack.shop_url, email(stack, "dave"), PW).status_code == 401
    # An older invitation dies when the password is set through a newer one.
    older = stack.invite(email(stack, "dave"))
    time.sleep(0.01)
    newer = stack.invite(email(stack, "dave"))
    redeem_invitation(stack.shop_url, newer, PW).close()
    assert httpx.get(stack.shop_url + invite_path(older)).status_code == 410
    _, r = post_invite(stack, older, "an attacker pass phrase")
    assert r.status_code == 410
    assert login(stack.shop_url, email(stack, "dave"), PW).status_code == 303


def test_one_invitation_redeemed_by_many_at_once_sets_one_password(stack):
    token = stack.invite(email(stack, "gina"))
    clients, forms = [], []
    for i in range(8):
        c = httpx.Client(base_url=stack.shop_url, timeout=30)
        page = c.get(invite_path(token))
        clients.append(c)
        forms.append({"csrf": csrf_from(page.text), "password": f"racer number {i} phrase",
                      "confirm": f"racer number {i} phrase"})
    start, codes = threading.Barrier(len(clients)), {}

    def race(i: int) -> None:
        start.wait()
        codes[i] = clients[i].post(invite_path(token), data=forms[i]).status_code

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, code in codes.items() if code == 303]
    assert len(winners) == 1, codes
    assert sorted(codes.values()) == [303] + [410] * (len(clients) - 1)
    ok = login(stack.shop_url, email(stack, "gina"), f"racer number {winners[0]} phrase")
    assert ok.status_code == 303


def test_self_service_change_ends_every_other_session(stack):
    first = member_client(stack, "bob")
    second = staff_client(stack.shop_url, email(stack, "bob"), PW)
    assert second.get("/admin").status_code == 200
    page = first.get("/admin/password")
    assert page.status_code == 200
    bad = first.post("/admin/password", data={"csrf": csrf_from(page.text), "current": "wrong",
                                              "new": "bob's new phrase", "confirm":
                                              "bob's new phrase"})
    assert bad.status_code == 400
    short = first.post("/admin/password", data={"csrf": csrf_from(page.text), "current": PW,
                                                "new": "short", "confirm": "short"})
    assert short.status_code == 400
    change_password(first, PW, "bob's new phrase")
    assert first.get("/admin").status_code == 200  # this browser got a new session
    r = second.get("/admin")
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/login"
    assert login(stack.shop_url, email(stack, "bob"), PW).status_code == 401
    assert login(stack.shop_url, email(stack, "bob"), "bob's new phrase").status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(stack):
    c = member_client(stack, "carol")
    stolen = dict(c.cookies)
    c.post("/admin/logout", data={"csrf": admin_csrf(c)})
    replay = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.shop_url, cookies=stolen)
    r = replay.get("/admin/orders")
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/login"


def test_sessions_end_at_their_expiry(stack):
    c = member_client(stack, "erin")
    assert c.get("/admin").status_code == 200
    with psycopg.connect(stack.shop_dsn) as conn:
        conn.execute("UPDATE staff_sessions SET expires_at = now() - interval '1 second'"
                     " WHERE email = %s", (email(stack, "erin"),))
    assert c.get("/admin").status_code == 303


def test_hq_admin_replaces_the_bootstrap_password_at_first_login(stack):
    r = login(stack.hq_url, HQ_ADMIN, stack.hq_bootstrap_password)
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/password"
    c = httpx.Client(timeout=HTTP_TIMEOUT, base_url=stack.hq_url, cookies=dict(r.cookies))
    # Nothing else opens before the change.
    blocked = c.get("/admin")
    assert blocked.status_code == 303
    assert blocked.headers["location"] == "/admin/password"
    assert 'id="must-change"' in c.get("/admin/password").text
    change_password(c, stack.hq_bootstrap_password, "hq's own pass phrase")
    assert c.get("/admin").status_code == 200
    assert login(stack.hq_url, HQ_ADMIN, stack.hq_bootstrap_password).status_code == 401
    assert login(stack.hq_url, HQ_ADMIN, "hq's own pass phrase").status_code == 303


# --- item 2: members:manage never reaches wider rights ----------------------------------------

def _reset(client: httpx.Client, who: str) -> httpx.Response:
    return client.post("/admin/members/reset", data={"csrf": admin_csrf(client), "email": who})


def test_a_manager_cannot_reset_a_member_with_rights_beyond_their_own(stack):
    manager = member_client(stack, "site-admin")  # members:manage, no finance rights
    finance = member_client(stack, "finance")
    r = _reset(manager, email(stack, "finance"))
    assert r.status_code == 403
    assert "permissions that you do not have" in r.text or "您没有的权限" in r.text
    # Nothing happened to the finance member.
    assert finance.get("/admin/finance").status_code == 200
    assert login(stack.shop_url, email(stack, "finance"), PW).status_code == 303
    # Nor on themselves through the manage path.
    r = _reset(manager, email(stack, "site-admin"))
    assert r.status_code == 403
    assert manager.get("/admin").status_code == 200
    # The members page offers no reset where it would be refused.
    page = manager.get("/admin/members").text
    row = page.split(f'data-email="{email(stack, "finance")}"')[1].split("</tr>")[0]
    assert "/admin/members/reset" not in row


def test_a_manager_resets_a_narrower_member_who_then_chooses_a_new_password(stack):
    manager = member_client(stack, "owner")
    ops = member_client(stack, "frank")
    r = _reset(manager, email(stack, "frank"))
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    link = r.text.split('id="invitation-link"')[1].split(">")[1].split("<")[0]
    assert "/admin/invite/" in link
    # The member's sessions and password ended with the reset.
    assert ops.get("/admin").status_code == 303
    assert login(stack.shop_url, email(stack, "frank"), PW).status_code == 401
    c = httpx.Client(base_url=stack.shop_url, timeout=30)
    path = httpx.URL(link).raw_path.decode()
    page = c.get(path)
    assert page.status_code == 200
    r = c.post(path, data={"csrf": csrf_from(page.text), "password": "frank's fresh phrase",
                           "confirm": "frank's fresh phrase"})
    assert r.status_code == 303
    assert login(stack.shop_url, email(stack, "frank"), "frank's fresh phrase").status_code == 303


def test_upgrading_clears_every_password_a_shop_stored_before(pg_admin_dsn):
    # Before this version a shop's member passwords were the shared bootstrap password or
    # set by someone else: the migration removes them and voids older invitations.
    import asyncio

    from kameng_storefront.db import migrate, migration_files
    from tests.support.storefront import temp_database

    old = [(v, q) for v, q in migration_files("subsite") if v < "subsite_0201"]

    async def run(dsn: str) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for _, q in old:
                await conn.execute(q)
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   " version text PRIMARY KEY, applied_at timestamptz"
                                   " NOT NULL DEFAULT now())")
            for v, _ in old:
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (v,))
            await conn.execute("INSERT INTO staff (email, name, password_hash) VALUES"
                               " ('a@x', 'a', 'argon2-hash-of-the-shared-password')")
            applied = await migrate(conn, "subsite")
            # 0201 and every later migration run; 0201 is the one that matters here.
            assert applied[0] == "subsite_0201_identities"
            assert applied == sorted(v for v, _ in migration_files("subsite")
                                     if v >= "subsite_0201")
            row = await (await conn.execute(
                "SELECT password_hash, credential_changed_at FROM staff")).fetchone()
            assert row[0] is None
            assert row[1] is not None

    with temp_database(pg_admin_dsn, "kameng_upgrade") as dsn:
        asyncio.run(run(dsn))
