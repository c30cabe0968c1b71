"""The invitation contract: signed, bound to one site, expiring, and robust to any input."""

from __future__ import annotations

import time

import pytest

from kameng.contracts import invitation
from kameng.contracts.invitation import InvitationError

SECRET = "session-secret-of-the-site"
KEY = invitation.invitation_key(SECRET)


def test_round_trip_carries_the_claims():
    now = 1_800_000_000.0
    token = invitation.issue(SECRET, "demo", "alice", " Alice@Demo.Example ", ttl_seconds=3600,
                             now=now)
    claims = invitation.verify(token, KEY, "demo", now=now + 10)
    assert (claims.site, claims.member, claims.email) == ("demo", "alice", "alice@demo.example")
    assert claims.iat == now
    assert claims.exp == now + 3600
    assert len(claims.nonce) >= 16


def test_each_invitation_has_its_own_nonce():
    a, b = (invitation.verify(invitation.issue(SECRET, "demo", "a", "a@x"), KEY, "demo")
            for _ in range(2))
    assert a.nonce != b.nonce


def test_key_is_derived_not_the_session_secret():
    assert SECRET.encode() != KEY
    assert invitation.invitation_key("other") != KEY
    with pytest.raises(ValueError, match="empty"):
        invitation.invitation_key("")


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda t: t[:-3] + ("B" if t[-3] == "A" else "A") + t[-2:], "signature"),
    (lambda t: "x" + t, "signature"),
    (lambda t: t.replace(".", ""), "malformed"),
    (lambda t: t + ".x", "malformed"),
    (lambda t: "", "malformed"),
    (lambda t: "a" * 5000 + "." + "b", "malformed"),
])
def test_tampered_tokens_are_refused(mutate, reason):
    token = invitation.issue(SECRET, "demo", "alice", "alice@x")
    with pytest.raises(InvitationError) as e:
        invitation.verify(mutate(token), KEY, "demo")
    assert e.value.reason == reason


def test_another_sites_key_or_name_is_refused():
    token = invitation.issue(SECRET, "demo", "alice", "alice@x")
    with pytest.raises(InvitationError, match="signature"):
        invitation.verify(token, invitation.invitation_key("another"), "demo")
    with pytest.raises(InvitationError, match="site"):
        invitation.verify(token, KEY, "moon")


def test_expiry_and_future_issue():
    now = float(int(time.time()))  # whole seconds: the token keeps milliseconds
    token = invitation.issue(SECRET, "demo", "a", "a@x", ttl_seconds=60, now=now)
    invitation.verify(token, KEY, "demo", now=now + 59)
    with pytest.raises(InvitationError, match="expired"):
        invitation.verify(token, KEY, "demo", now=now + 60)
    future = invitation.issue(SECRET, "demo", "a", "a@x", now=now + 3600)
    with pytest.raises(InvitationError, match="not_yet_valid"):
        invitation.verify(future, KEY, "demo", now=now)


def test_lifetime_is_bounded_even_in_a_forged_token_with_the_right_key():
    with pytest.raises(ValueError, match="between"):
        invitation.issue(SECRET, "demo", "a", "a@x", ttl_seconds=invitation.MAX_TTL_SECONDS + 1)
    with pytest.raises(ValueError, match="between"):
        invitation.issue(SECRET, "demo", "a", "a@x", ttl_seconds=0)
    now = time.time()
    long = invitation.sign(invitation.InvitationClaims(
        "demo", "a", "a@x", "n", now, now + invitation.MAX_TTL_SECONDS + 10), KEY)
    with pytest.raises(InvitationError, match="expired"):
        invitation.verify(long, KEY, "demo", now=now)


@pytest.mark.parametrize("junk", ["", ".", "a.b", "€.€", "\x00.\x00", "e30.AAAA", "%%%.%%%",
                                  "eyJzaXRlIjoxfQ.", "." * 3])
def test_junk_only_ever_raises_invitation_error(junk):
    with pytest.raises(InvitationError):
        invitation.verify(junk, KEY, "demo")


def test_signed_but_wrong_shape_claims_are_malformed():
    import base64
    import hashlib
    import hmac

    body = base64.urlsafe_b64encode(b'{"site":"demo"}').rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(hmac.new(KEY, body.encode(), hashlib.sha256).digest())
    with pytest.raises(InvitationError, match="malformed"):
        invitation.verify(f"{body}.{mac.rstrip(b'=').decode()}", KEY, "demo")


def test_url_is_the_sites_invite_path():
    token = invitation.issue(SECRET, "demo", "a", "a@x")
    assert invitation.invitation_url("https://shop.example/", token) == (
        f"https://shop.example/admin/invite/{token}")
