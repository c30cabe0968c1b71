"""The life cycle's edges that decide money and access outside the state table: a License
as the API returns it (the workers' view, holds included), the lead time a token carries,
the message of a hold, and the time-left text with the moment it next changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kameng.api.holds import HOLD_PREFIX
from kameng.contracts.license_token import LicenseClaims
from kameng.licensing.lifecycle import EXPIRING_SOON_LEAD, Terms, state_at, time_left

START = datetime(2030, 1, 1, tzinfo=UTC)
END = datetime(2031, 1, 1, tzinfo=UTC)
GRACE_UNTIL = END + timedelta(hours=72)
TERMS = Terms(site="demo", start=START, end=END, grace_until=GRACE_UNTIL)
MIN, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def _license(**meta) -> dict:
    return {"apiVersion": "kameng.io/v1alpha1", "kind": "License", "metadata": meta,
            "spec": {"subSite": "demo", "plan": "basic", "categories": ["game"],
                     "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
                     "gracePeriod": "48h", "expiringSoonBefore": "168h"}}


# --- Terms.from_object: the spec and the holds of an API object --------------------------

def test_a_license_object_gives_its_terms_and_holds() -> None:
    obj = _license(name="demo", annotations={
        HOLD_PREFIX + "risk": '{"reason":"chargebacks","since":"2030-06-01T00:00:00Z",'
                              '"by":"risk-worker"}',
        HOLD_PREFIX + "payout": "hand-written",
        "other.io/x": "not a hold"})
    terms = Terms.from_object(obj)
    assert (terms.site, terms.start, terms.end) == ("demo", START, END)
    assert terms.grace_until == END + timedelta(hours=48)
    assert terms.expiring_soon_lead == timedelta(hours=168)
    assert [(h.kind, h.reason) for h in terms.holds] == [("payout", "hand-written"),
                                                         ("risk", "chargebacks")]
    # The risk hold suspends at any time of the term; that is what the workers act on.
    lc = state_at(terms, START + DAY)
    assert lc.state == "Suspended"
    assert lc.payouts_held


def test_a_license_object_without_annotations_or_metadata_has_no_holds() -> None:
    for meta in ({}, {"annotations": None}, {"name": "demo"}):
        terms = Terms.from_object(_license(**meta))
        assert terms.holds == ()
        assert state_at(terms, START + DAY).state == "Active"
    obj = _license()
    obj["metadata"] = None
    assert Terms.from_object(obj).holds == ()


def test_from_spec_keeps_the_holds_it_is_given() -> None:
    obj = _license(annotations={HOLD_PREFIX + "payout": '{"reason":"kyc"}'})
    terms = Terms.from_object(obj)
    assert len(terms.holds) == 1
    assert state_at(terms, START + DAY).payouts_held


# --- Terms.from_claims: the lead time in the token ------------------------------------------

def _claims(warn_at: datetime | None) -> LicenseClaims:
    return LicenseClaims(site="demo", nbf=START, exp=END, graceUntil=GRACE_UNTIL,
                         warnAt=warn_at)


def test_the_tokens_lead_time_is_never_negative_and_may_be_zero() -> None:
    assert Terms.from_claims(_claims(None)).expiring_soon_lead == EXPIRING_SOON_LEAD
    assert Terms.from_claims(_claims(END - HOUR)).expiring_soon_lead == HOUR
    assert Terms.from_claims(_claims(END)).expiring_soon_lead == timedelta(0)
    assert Terms.from_claims(_claims(END + DAY)).expiring_soon_lead == timedelta(0)
    # No ExpiringSoon at all: the last second of the term is still Active.
    assert state_at(Terms.from_claims(_claims(END)), END - timedelta(seconds=1)).state == (
        "Active")


# --- the message of a hold ----------------------------------------------------------------

def test_a_hold_without_a_reason_says_how_to_lift_it() -> None:
    from kameng.api.holds import Hold
    lc = state_at(Terms("demo", START, END, GRACE_UNTIL, holds=(Hold("risk"),)), START)
    assert lc.message == "held (risk); lift with `kubectl kameng release demo --kind risk`"
    lc = state_at(Terms("demo", START, END, GRACE_UNTIL, holds=(Hold("risk", "fraud"),)),
                  START)
    assert lc.message == ("held (risk): fraud; lift with "
                          "`kubectl kameng release demo --kind risk`")


# --- time_left: text and next change at each boundary ------------------------------------

def test_time_left_before_the_term() -> None:
    assert time_left(TERMS, START - 3 * DAY) == ("starts in 3d", START - 3 * DAY)
    assert time_left(TERMS, START - 5 * MIN) == ("starts in 5m", START - 4 * MIN)


def test_each_phase_boundary_belongs_to_the_later_phase() -> None:
    assert time_left(TERMS, START) == ("365d", END - 365 * DAY)
    assert time_left(TERMS, END) == ("grace 3d", GRACE_UNTIL - 3 * DAY)
    assert time_left(TERMS, GRACE_UNTIL) == ("expired", None)
    assert time_left(TERMS, GRACE_UNTIL - timedelta(seconds=1)) == ("grace 1m", GRACE_UNTIL)


def test_days_from_two_days_hours_from_two_hours() -> None:
    assert time_left(TERMS, END - 2 * DAY) == ("2d", END - 2 * DAY)
    assert time_left(TERMS, END - 2 * DAY + MIN) == ("47h", END - 47 * HOUR)
    assert time_left(TERMS, END - 2 * HOUR) == ("2h", END - 2 * HOUR)
    assert time_left(TERMS, END - 2 * HOUR + MIN) == ("120m", END - 110 * MIN)


def test_ten_minute_steps_round_up_then_minutes() -> None:
    # 25 minutes left: "30m" until 20 are left.
    assert time_left(TERMS, END - 25 * MIN) == ("30m", END - 20 * MIN)
    assert time_left(TERMS, END - 20 * MIN) == ("20m", END - 10 * MIN)
    # Exactly ten left: minute by minute from here.
    assert time_left(TERMS, END - 10 * MIN) == ("10m", END - 9 * MIN)
    assert time_left(TERMS, END - 10 * MIN - timedelta(seconds=1)) == ("20m", END - 10 * MIN)
    assert time_left(TERMS, END - timedelta(seconds=30)) == ("1m", END)
