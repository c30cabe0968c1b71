"""The operator's choice of a site's HQ API token and the registry entry it publishes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from kameng.contracts.hq_auth import SiteCredential, token_digest
from kameng.controller.sitecreds import choose_token, desired_entry, entry_of

NOW = datetime(2030, 6, 1, tzinfo=UTC)


def _entry(token: str, rotation: str = "") -> SiteCredential:
    return desired_entry("s1", token, None, "active", rotation, ["https://s1.example"], NOW)


def test_the_secrets_token_is_kept_until_a_new_rotation_request():
    entry = _entry("tok")
    assert choose_token("tok", entry, "") == ("tok", False)
    assert choose_token("tok", None, "") == ("tok", False)  # registry lost: publish it again
    assert choose_token("tok", None, "r1") == ("tok", False)  # first publication
    token, minted = choose_token("tok", entry, "r1")  # a request not answered yet
    assert minted
    assert token != "tok"
    assert choose_token("tok", _entry("tok", "r1"), "r1") == ("tok", False)  # answered once
    token, minted = choose_token(None, None, "")  # a new site (or its Secret lost)
    assert minted
    assert len(token) >= 43


def test_entry_keeps_its_creation_time_while_the_token_stays():
    first = _entry("tok")
    assert first.sha256 == token_digest("tok")
    assert first.created_at == NOW.isoformat(timespec="seconds")
    later = NOW + timedelta(days=1)
    same = desired_entry("s1", "tok", first, "suspended", "", first.urls, later)
    assert same.created_at == first.created_at
    assert same.state == "suspended"
    rotated = desired_entry("s1", "tok2", first, "active", "r1", first.urls, later)
    assert rotated.created_at == later.isoformat(timespec="seconds")
    assert rotated.rotation == "r1"


def test_entry_of_reads_one_key_of_the_registry_secret():
    entry = _entry("tok")
    secret = {"data": {"s1": base64.b64encode(entry.to_json().encode()).decode(),
                       "s2": base64.b64encode(b"garbage").decode()}}
    assert entry_of(secret, "s1") == entry
    assert entry_of(secret, "s2") is None  # unreadable: rewritten by the next reconcile
    assert entry_of(secret, "s3") is None
    assert entry_of(None, "s1") is None


def test_registered_urls_add_a_valid_shop_url_origin_only():
    from kameng.controller.sitecreds import registered_urls

    assert registered_urls("https://s1.example", "") == ["https://s1.example"]
    assert registered_urls("https://s1.example", "http://127.0.0.1:8081/x") == [
        "https://s1.example", "http://127.0.0.1:8081"]
    for bad in ("javascript:alert(1)", "ftp://x", "http://u@h/", "not a url"):
        assert registered_urls("https://s1.example", bad) == ["https://s1.example"]
