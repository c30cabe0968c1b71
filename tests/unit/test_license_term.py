from datetime import UTC, datetime, timedelta

import pytest

from kameng.licensing.term import (
    Term,
    format_time,
    parse_duration,
    parse_time,
    renew,
    renewal_fee,
    renewal_of_spec,
)

NOW = datetime(2027, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("72h", timedelta(hours=72)), ("90m", timedelta(minutes=90)), ("365d", timedelta(days=365)),
    ("1d12h", timedelta(days=1, hours=12)), ("30s", timedelta(seconds=30)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "3 days", "1y", "h", "-5h"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


def test_time_round_trip_and_zone_required():
    assert format_time(parse_time("2027-01-01T08:00:00+08:00")) == "2027-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="without a zone"):
        parse_time("2027-01-01T00:00:00")


def test_from_expiry_extends_from_end_even_when_expired():
    expired = Term(NOW - timedelta(days=400), NOW - timedelta(days=30))
    new = renew(expired, timedelta(days=365), "FromExpiry", NOW)
    assert new.start == expired.start
    assert new.end == expired.end + timedelta(days=365)


def test_from_now_if_expired_restarts_an_expired_term():
    expired = Term(NOW - timedelta(days=400), NOW - timedelta(days=30))
    new = renew(expired, timedelta(days=365), "FromNowIfExpired", NOW)
    assert new == Term(NOW, NOW + timedelta(days=365))


def test_from_now_if_expired_extends_an_active_term_from_its_end():
    active = Term(NOW - timedelta(days=100), NOW + timedelta(days=10))
    assert renew(active, timedelta(days=365), "FromNowIfExpired", NOW).end == \
        active.end + timedelta(days=365)


def test_renew_rejects_non_positive_and_unknown():
    t = Term(NOW, NOW + timedelta(days=1))
    with pytest.raises(ValueError, match="positive"):
        renew(t, timedelta(0), "FromExpiry", NOW)
    with pytest.raises(ValueError, match="unknown renewal strategy"):
        renew(t, timedelta(days=1), "Forever", NOW)


# --- renewal fee and the one renewal computation (plugin, HQ page, invoice) ----------


_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_T1 = datetime(2027, 1, 1, tzinfo=UTC)


def test_renewal_fee_is_the_annual_fee_pro_rated_to_the_time_added():
    before = Term(_T0, _T1)
    assert renewal_fee(1_200_000, before, Term(_T0, _T1 + timedelta(days=365))) == 1_200_000
    assert renewal_fee(365_000, before, Term(_T0, _T1 + timedelta(days=10))) == 10_000
    # Half a fen rounds up; nothing added costs nothing.
    assert renewal_fee(1, before, Term(_T0, _T1 + timedelta(days=182, hours=12))) == 1
    assert renewal_fee(365_000, before, before) == 0


def test_renewal_fee_of_a_restart_charges_the_new_term_not_the_lapse():
    now = _T1 + timedelta(days=40)
    after = renew(Term(_T0, _T1), timedelta(days=365), "FromNowIfExpired", now)
    assert after == Term(now, now + timedelta(days=365))
    assert renewal_fee(365_000, Term(_T0, _T1), after) == 365_000


def test_renewal_of_spec_uses_the_licenses_own_strategy():
    spec = {"term": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
            "renewal": {"strategy": "FromNowIfExpired"}}
    now = _T1 + timedelta(days=40)
    assert renewal_of_spec(spec, timedelta(days=10), now) == (
        Term(_T0, _T1), Term(now, now + timedelta(days=10)))
    spec["renewal"] = {}
    assert renewal_of_spec(spec, timedelta(days=10), now)[1] == \
        Term(_T0, _T1 + timedelta(days=10))
