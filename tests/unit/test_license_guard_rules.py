"""The shop's license gate without a server: the term banner of the back office and the
verdict kept between requests (computed once per change, not per request)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kameng.contracts import license_token
from kameng.contracts.license_token import (
    LicenseClaims,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.web import license_guard
from kameng_storefront.web.license_guard import LicenseGuard
from tests.unit._zones import shanghai  # noqa: F401 - a fixture

START = datetime(2030, 1, 1, tzinfo=UTC)
END = datetime(2031, 1, 1, tzinfo=UTC)
GRACE_UNTIL = END + timedelta(hours=72)
KEY = generate_signing_key()


def _guard(**claims) -> LicenseGuard:
    c = {"site": "demo", "categories": ["game"], "nbf": START, "exp": END,
         "graceUntil": GRACE_UNTIL, "seq": 1, "warnAt": END - timedelta(days=7), **claims}
    site = SiteConfig(site="demo", hq_public_key=public_key_to_b64(KEY))
    return LicenseGuard(site, sign_token(LicenseClaims(**c), KEY))


# --- term_notice ---------------------------------------------------------------------------

def test_no_banner_while_active_pending_or_expired() -> None:
    g = _guard()
    for at in (START - timedelta(days=1), START, END - timedelta(days=7, seconds=1),
               GRACE_UNTIL, GRACE_UNTIL + timedelta(days=30)):
        assert g.term_notice(at) is None, at


def test_the_banner_while_expiring_soon_from_the_tokens_lead_time() -> None:
    g = _guard()
    assert g.term_notice(END - timedelta(days=7)) == {
        "state": "ExpiringSoon", "end": "2031-01-01T00:00:00Z",
        "grace_until": "2031-01-04T00:00:00Z", "left": "7d"}
    assert g.term_notice(END - timedelta(hours=5)) == {
        "state": "ExpiringSoon", "end": "2031-01-01T00:00:00Z",
        "grace_until": "2031-01-04T00:00:00Z", "left": "5h"}


def test_the_banner_in_grace_counts_to_the_end_of_grace() -> None:
    assert _guard().term_notice(END) == {
        "state": "Grace", "end": "2031-01-01T00:00:00Z",
        "grace_until": "2031-01-04T00:00:00Z", "left": "grace 3d"}


def test_without_a_time_the_banner_is_for_now() -> None:
    now = datetime.now(UTC)
    g = _guard(nbf=now - timedelta(days=30), exp=now + timedelta(days=3, hours=1),
               graceUntil=now + timedelta(days=6), warnAt=now - timedelta(days=1))
    notice = g.term_notice()
    assert notice is not None
    assert (notice["state"], notice["left"]) == ("ExpiringSoon", "3d")
    # An explicit time is that time, not now.
    assert g.term_notice(now - timedelta(days=2)) is None
    assert _guard(nbf=now - timedelta(days=30), exp=now + timedelta(days=300),
                  graceUntil=now + timedelta(days=303)).term_notice() is None


@pytest.mark.usefixtures("shanghai")
def test_now_is_utc_whatever_the_hosts_zone() -> None:
    # Four hours before ExpiringSoon: a clock read in the host's zone (UTC+8) and taken
    # for UTC would show the banner eight hours early.
    now = datetime.now(UTC)
    warn = now + timedelta(hours=4)
    g = _guard(nbf=now - timedelta(days=30), exp=warn + timedelta(days=7),
               graceUntil=warn + timedelta(days=10), warnAt=warn)
    assert g.term_notice() is None


def test_no_banner_without_a_valid_token() -> None:
    site = SiteConfig(site="demo", hq_public_key=public_key_to_b64(KEY))
    assert LicenseGuard(site, None).term_notice(END) is None
    assert LicenseGuard(site, "not-a-token").term_notice(END) is None
    other = sign_token(LicenseClaims(site="other", nbf=START, exp=END,
                                     graceUntil=GRACE_UNTIL), KEY)
    assert LicenseGuard(site, other).term_notice(END) is None


# --- mode(): the verdict kept between requests -------------------------------------------

class _Clock:
    """datetime with a settable now() for the guard's module (the verdict's cache)."""

    at = START

    @classmethod
    def now(cls, tz=None):  # the guard always asks for UTC
        return cls.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[_Clock]:
    calls: list[datetime] = []
    real = license_token.mode_until

    def counting(claims, now):
        calls.append(now)
        return real(claims, now)

    monkeypatch.setattr(license_guard, "datetime", _Clock)
    monkeypatch.setattr(license_guard, "mode_until", counting)
    _Clock.at = START + timedelta(days=1)
    _Clock.calls = calls  # type: ignore[attr-defined]
    return _Clock


def test_the_verdict_is_computed_once_until_it_can_change(clock) -> None:
    g = _guard()
    warn = END - timedelta(days=7)
    assert g.mode() == "normal"
    assert g.mode() == "normal"
    clock.at = warn - timedelta(seconds=1)
    assert g.mode() == "normal"
    assert len(clock.calls) == 1  # one verdict until the life cycle's next change
    clock.at = warn  # the cached verdict ends exactly here
    assert g.mode() == "normal"
    assert clock.calls[-1] == warn
    clock.at = END
    assert g.mode() == "readOnly"
    assert g.mode() == "readOnly"
    assert clock.calls == [START + timedelta(days=1), warn, END]


def test_a_new_token_is_a_new_verdict(clock) -> None:
    g = _guard()
    assert g.mode() == "normal"
    g._apply(sign_token(LicenseClaims(site="demo", nbf=START, exp=END,
                                      graceUntil=GRACE_UNTIL, suspended=True, seq=2), KEY))
    assert g.mode() == "suspended"
    assert len(clock.calls) == 2


def test_the_site_configs_mode_restricts_the_verdict(clock) -> None:
    g = _guard()
    g.site = SiteConfig(site="demo", hq_public_key=public_key_to_b64(KEY), mode="readOnly")
    assert g.mode() == "readOnly"
    assert g.mode(START + timedelta(days=1)) == "readOnly"
    assert g.mode(GRACE_UNTIL) == "suspended"
