from datetime import UTC, datetime, timedelta

import pytest

from kameng.licensing.term import Term, format_time, parse_duration, parse_time, renew

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
