"""Who the client is behind proxies: X-Forwarded-For is believed only from trusted ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kameng_storefront.config import ConfigError, load_settings
from kameng_storefront.web.forwarded import parse_networks, resolve_client
from kameng_storefront.web.throttle import client_subject

PROXIES = parse_networks("10.0.0.0/8, fd00::/8")


def test_no_trusted_proxy_means_the_peer() -> None:
    assert resolve_client("198.51.100.7", ["1.2.3.4"], ()) == "198.51.100.7"


def test_untrusted_peer_header_is_ignored() -> None:
    assert resolve_client("198.51.100.7", ["1.2.3.4"], PROXIES) == "198.51.100.7"


def test_walks_past_trusted_hops_only() -> None:
    # client forged "1.2.3.4"; the real client 203.0.113.5 was appended by the proxy chain.
    assert resolve_client("10.0.0.2", ["1.2.3.4, 203.0.113.5, 10.0.0.9"], PROXIES) \
        == "203.0.113.5"
    assert resolve_client("10.0.0.2", ["1.2.3.4", "203.0.113.5"], PROXIES) == "203.0.113.5"
    assert resolve_client("10.0.0.2", ["[2001:db8::1]:443"], PROXIES) == "2001:db8::1"


def test_garbage_hop_stops_at_the_last_trusted_one() -> None:
    assert resolve_client("10.0.0.2", ["1.2.3.4, not-an-ip"], PROXIES) == "10.0.0.2"


@given(st.text(max_size=300), st.sampled_from(["10.0.0.1", "198.51.100.1", "fd00::1", "x"]))
def test_never_raises_and_never_believes_an_untrusted_peer(header: str, peer: str) -> None:
    out = resolve_client(peer, [header], PROXIES)
    if peer in ("198.51.100.1", "x"):
        assert out == peer
    client_subject(out)  # any result is a usable throttle subject


def test_ipv6_clients_count_per_64() -> None:
    assert client_subject("2001:db8::1") == client_subject("2001:db8::ffff") == "2001:db8::/64"
    assert client_subject("::ffff:192.0.2.1") == "192.0.2.1"


def test_setting_is_validated() -> None:
    base = {"KAMENG_SECRETS_ROOT": "/nonexistent", "KAMENG_DATABASE_URL": "x",
            "KAMENG_REDIS_URL": "x", "KAMENG_SESSION_SECRET": "x", "KAMENG_DATA_KEYS": "x",
            "KAMENG_HQ_MASTER_SECRET": "x"}
    ok = load_settings("hq", {**base, "KAMENG_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert [str(n) for n in ok.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert load_settings("hq", base).trusted_proxies == ()  # default: nobody is believed
    with pytest.raises(ConfigError, match="bogus"):
        load_settings("hq", {**base, "KAMENG_TRUSTED_PROXIES": "10.0.0.0/8,bogus"})
    with pytest.raises(ConfigError, match="KAMENG_MAX_BODY_BYTES"):
        load_settings("hq", {**base, "KAMENG_MAX_BODY_BYTES": "-1"})
