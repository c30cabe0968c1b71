"""The site-credential contract HQ authenticates sites with: digests, keys, the entry's
wire form and site names; and who a client is for the throttles."""

from __future__ import annotations

import hashlib
import hmac
from types import SimpleNamespace

import pytest

from kameng.contracts.hq_auth import (
    CredentialError,
    SiteCredential,
    new_site_api_token,
    notification_key,
    token_digest,
    valid_site_name,
)
from kameng_storefront.web.auth import _client


def test_token_is_256_random_bits_url_safe():
    tokens = {new_site_api_token() for _ in range(50)}
    assert len(tokens) == 50
    for t in tokens:
        assert len(t) == 43  # 32 bytes, base64url without padding
        assert set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_digest_is_sha256_hex_and_empty_is_not_special():
    assert token_digest("abc") == hashlib.sha256(b"abc").hexdigest()
    assert token_digest("") == hashlib.sha256(b"").hexdigest()
    assert token_digest(None) == hashlib.sha256(b"").hexdigest()  # type: ignore[arg-type]


def test_notification_key_is_domain_separated_from_the_digest():
    d = token_digest("tok")
    key = notification_key(d)
    assert key == hmac.new(d.encode(), b"kameng-site-notify:v1", hashlib.sha256).hexdigest()
    assert key != d
    assert notification_key(token_digest("other")) != key
    entry = SiteCredential(site="demo", sha256=d, createdAt="2026-01-01T00:00:00Z")
    assert entry.notification_key() == key


def test_entry_round_trips_in_its_wire_form_and_refuses_garbage():
    e = SiteCredential(site="demo", sha256=token_digest("t"), createdAt="2026-01-01T00:00:00Z",
                       state="suspended", rotation="r1", urls=["https://demo.example"])
    wire = e.to_json()
    assert '"createdAt"' in wire
    assert '"created_at"' not in wire
    assert SiteCredential.from_json(wire) == e
    assert SiteCredential.from_json(wire.encode()) == e
    for bad in ("", "{}", '{"site":"demo","sha256":"xyz","createdAt":"t"}', "not json"):
        with pytest.raises(CredentialError, match="site credential entry is invalid"):
            SiteCredential.from_json(bad)


def test_site_names_are_dns_labels_never_paths():
    assert valid_site_name("demo")
    assert valid_site_name("a1-b2")
    for bad in ("", "../etc", "Demo", "demo/x", "-demo", "a" * 64, None):
        assert not valid_site_name(bad)  # type: ignore[arg-type]


def test_a_client_is_its_ipv4_address_or_ipv6_slash_64():
    def req(host):
        return SimpleNamespace(client=SimpleNamespace(host=host) if host else None)

    assert _client(req("203.0.113.7")) == "203.0.113.7"
    assert _client(req("2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"
    assert _client(req(None)) == ""
