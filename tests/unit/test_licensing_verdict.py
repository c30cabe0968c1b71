from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kameng.api.license import LicenseSpec
from kameng.contracts.license_token import generate_signing_key, verify_token
from kameng.licensing.term import parse_duration
from kameng.licensing.verdict import token_for, verdict_for

NOW = datetime(2030, 6, 1, tzinfo=UTC)


def lic(**kw: object) -> LicenseSpec:
    base: dict = {"subSite": "demo", "plan": "basic", "categories": ["game-cards"],
                  "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"}}
    base.update(kw)
    return LicenseSpec.model_validate(base)


def test_active_license_is_valid() -> None:
    v = verdict_for("demo", "demo", lic(), 3, NOW)
    assert (v.valid, v.reason, v.state, v.mode) == (True, "LicenseActive", "Active", "normal")
    assert v.expires_at == "2031-01-01T00:00:00Z"
    # The next change is the start of ExpiringSoon, 30 days before the end.
    assert v.next_change == datetime(2030, 12, 2, tzinfo=UTC)


def test_last_30_days_are_expiring_soon_and_still_sell() -> None:
    v = verdict_for("demo", "demo", lic(), 3, datetime(2030, 12, 15, tzinfo=UTC))
    assert (v.valid, v.reason, v.state, v.mode) == (True, "LicenseExpiringSoon",
                                                    "ExpiringSoon", "normal")
    assert "renew" in v.message
    assert v.next_change == datetime(2031, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("spec", "reason", "state", "mode"), [
    (None, "LicenseNotFound", None, "suspended"),
    ({"subSite": "other"}, "LicenseForOtherSite", None, "suspended"),
    ({"suspended": True, "suspendReason": "risk"}, "LicenseSuspended", "Suspended",
     "suspended"),
    ({"term": {"start": "2031-01-01T00:00:00Z", "end": "2032-01-01T00:00:00Z"}},
     "LicenseNotYetValid", "Pending", "suspended"),
    ({"term": {"start": "2029-01-01T00:00:00Z", "end": "2030-05-31T00:00:00Z"},
      "gracePeriod": "72h"}, "LicenseInGrace", "Grace", "readOnly"),
    ({"term": {"start": "2029-01-01T00:00:00Z", "end": "2030-05-01T00:00:00Z"}},
     "LicenseExpired", "Expired", "suspended"),
])
def test_invalid_licenses_explain_why(spec: dict | None, reason: str, state: str | None,
                                      mode: str) -> None:
    v = verdict_for("demo", "demo", lic(**spec) if spec is not None else None, 1, NOW)
    assert not v.valid
    assert (v.reason, v.state, v.mode) == (reason, state, mode)
    assert v.message


def test_token_is_signed_deterministic_and_carries_the_scope() -> None:
    key = generate_signing_key()
    v = verdict_for("demo", "demo", lic(regions=["CN-31"]), 4, NOW)
    token = token_for(v, key, None, NOW)
    claims = verify_token(token, key.public_key())
    # Same claims as the token the site holds: same bytes, no Secret rewrite, later too.
    assert token == token_for(v, key, claims, NOW + timedelta(days=3))
    assert (claims.site, claims.regions) == ("demo", ["CN-31"])
    assert claims.seq == int(NOW.timestamp() * 1000)
    assert claims.grace_until - claims.exp == timedelta(hours=72)


def test_sequence_never_goes_backwards() -> None:
    key = generate_signing_key()
    first = verify_token(token_for(verdict_for("demo", "demo", lic(), 0, NOW), key, None, NOW),
                         key.public_key())
    # Changed claims: a higher number, even with the clock behind the last one.
    changed = verdict_for("demo", "demo", lic(suspended=True), 0, NOW)
    behind = NOW - timedelta(days=1)
    second = verify_token(token_for(changed, key, first, behind), key.public_key())
    assert second.seq == first.seq + 1
    # Every object that remembered a number is gone (License re-created, Secret lost):
    # the clock still puts the new number above every earlier one.
    later = NOW + timedelta(seconds=1)
    third = verify_token(token_for(verdict_for("demo", "demo", lic(), 0, later), key, None,
                                   later), key.public_key())
    assert third.seq > second.seq


def test_no_token_without_license() -> None:
    assert token_for(verdict_for("demo", "demo", None, 0, NOW), generate_signing_key(), None,
                     NOW) == ""


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("")
