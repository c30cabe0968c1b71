from __future__ import annotations

from urllib.parse import urlsplit

from kameng.children.secrets import b64
from kameng.controller.credentials import (
    new_data_key,
    or_new,
    read_existing,
)
from kameng.provision.names import new_password, pg_identifier, redis_user
from kameng.provision.postgres import site_dsn, target_of
from kameng.provision.redis_acl import acl_rules, site_url
from kameng.provision.redis_acl import target_of as redis_target


def test_names() -> None:
    assert pg_identifier("my-shop") == "kameng_my_shop"
    assert len(pg_identifier("a" * 56)) <= 63
    assert redis_user("my-shop") == "kameng-site-my-shop"


def test_password_is_32_random_bytes() -> None:
    a, b = new_password(), new_password()
    assert a != b
    assert len(a) >= 43


def test_dsn_and_url_carry_the_site_credentials() -> None:
    t = target_of("postgresql://admin:pw@10.0.0.1:5433/postgres")
    dsn = site_dsn("my-shop", "p/w+", t.host, t.port)
    u = urlsplit(dsn)
    assert (u.username, u.hostname, u.port, u.path) == ("kameng_my_shop", "10.0.0.1", 5433,
                                                        "/kameng_my_shop")
    r = site_url("my-shop", "secret", redis_target("redis://:adm@127.0.0.1:6390/2"))
    assert r == "redis://kameng-site-my-shop:secret@127.0.0.1:6390/2"


def test_acl_rules_limit_keys_and_never_send_the_plain_password() -> None:
    rules = acl_rules("demo", "hunter2")
    assert "~site:demo:*" in rules
    assert "%W~kameng:orders:demo" in rules
    assert "%R~kameng:decisions:demo" in rules
    assert not any("hunter2" in r for r in rules)
    assert rules.index("-@all") < rules.index("+@stream") < rules.index("-@dangerous")


def test_existing_credentials_are_reused_not_rotated() -> None:
    found = {
        "storefront-db": {"data": {"dsn": b64("postgresql://u:p%2Fq@h:1/d")}},
        "storefront-keys": {"data": {"session-secret": b64("s"), "data-key": b64("k1:x")}},
        "storefront-redis": None,
    }
    old = read_existing(found)
    assert old.db_password == "p/q"
    assert old.redis_password is None
    assert (old.session_secret, old.data_key) == ("s", "k1:x")
    assert or_new(old.db_password) == ("p/q", False)
    value, generated = or_new(old.redis_password)
    assert generated
    assert value
    assert "p/q" not in repr(old)


def test_data_key_format() -> None:
    kid, _, raw = new_data_key().partition(":")
    assert kid == "k1"
    assert len(raw) == 44
