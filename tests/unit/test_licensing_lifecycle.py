"""The one license life cycle: every boundary, from a spec and from token claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kameng.api.license import LicenseSpec
from kameng.contracts.license_token import LicenseClaims, evaluate_mode
from kameng.licensing.lifecycle import EXPIRING_SOON_LEAD, Terms, state_at

START = datetime(2030, 1, 1, tzinfo=UTC)
END = datetime(2031, 1, 1, tzinfo=UTC)
GRACE_UNTIL = END + timedelta(hours=72)
WARN = END - EXPIRING_SOON_LEAD
S = timedelta(seconds=1)
TERMS = Terms(site="demo", start=START, end=END, grace_until=GRACE_UNTIL)


@pytest.mark.parametrize(("now", "state", "reason", "mode", "next_change"), [
    (START - S, "Pending", "NotYetValid", "suspended", START),
    (START, "Active", "Active", "normal", WARN),
    (WARN - S, "Active", "Active", "normal", WARN),
    (WARN, "ExpiringSoon", "ExpiringSoon", "normal", END),
    (END - S, "ExpiringSoon", "ExpiringSoon", "normal", END),
    (END, "Grace", "InGrace", "readOnly", GRACE_UNTIL),
    (GRACE_UNTIL - S, "Grace", "InGrace", "readOnly", GRACE_UNTIL),
    (GRACE_UNTIL, "Expired", "Expired", "suspended", None),
    (GRACE_UNTIL + timedelta(days=999), "Expired", "Expired", "suspended", None),
])
def test_each_boundary_belongs_to_the_later_state(now, state, reason, mode, next_change):
    lc = state_at(TERMS, now)
    assert (lc.state, lc.reason, lc.mode, lc.next_change) == (state, reason, mode,
                                                              next_change)
    assert lc.selling == (mode == "normal")
    assert lc.message


@pytest.mark.parametrize("now", [START - S, START, WARN, END, GRACE_UNTIL,
                                 GRACE_UNTIL + timedelta(days=1)])
def test_suspension_wins_at_any_time(now):
    lc = state_at(Terms("demo", START, END, GRACE_UNTIL, suspended=True,
                        suspend_reason="risk"), now)
    assert (lc.state, lc.reason, lc.mode, lc.selling) == ("Suspended", "Suspended",
                                                          "suspended", False)
    assert "risk" in lc.message


def test_expiring_soon_lead_is_a_parameter():
    assert state_at(TERMS, END - timedelta(days=10), timedelta(days=7)).state == "Active"
    assert state_at(TERMS, END - timedelta(days=6), timedelta(days=7)).state == \
        "ExpiringSoon"


def test_a_term_shorter_than_the_lead_is_expiring_soon_from_its_start():
    short = Terms("demo", START, START + timedelta(days=10),
                  START + timedelta(days=10, hours=72))
    assert state_at(short, START).state == "ExpiringSoon"


def test_no_grace_period_expires_at_the_end():
    lc = state_at(Terms("demo", START, END, END), END)
    assert lc.state == "Expired"


def test_message_tells_how_to_renew_while_expiring_soon():
    assert "kubectl kameng renew demo" in state_at(TERMS, END - S).message


def test_spec_and_claims_give_the_same_terms():
    spec = LicenseSpec.model_validate({
        "subSite": "demo", "plan": "basic", "categories": ["game-cards"],
        "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
        "gracePeriod": "72h"})
    claims = LicenseClaims(site="demo", nbf=START, exp=END, graceUntil=GRACE_UNTIL)
    assert Terms.from_spec(spec) == Terms.from_claims(claims) == TERMS
    naive = LicenseClaims(site="demo", nbf=START.replace(tzinfo=None),
                          exp=END.replace(tzinfo=None),
                          graceUntil=GRACE_UNTIL.replace(tzinfo=None))
    assert Terms.from_claims(naive) == TERMS


@pytest.mark.parametrize("now", [START - S, START, WARN, END - S, END, GRACE_UNTIL])
def test_token_mode_is_the_life_cycle_mode(now):
    claims = LicenseClaims(site="demo", nbf=START, exp=END, graceUntil=GRACE_UNTIL)
    assert evaluate_mode(claims, now) == state_at(TERMS, now).mode


def test_the_life_cycle_and_the_token_import_nothing_above_them():
    import subprocess
    import sys

    code = ("import sys, kameng.licensing.lifecycle, kameng.licensing.verdict, "
            "kameng.contracts.license_token; print(sorted(m for m in sys.modules "
            "if m.startswith(('kameng.controller', 'kameng.kube', 'kameng.children', "
            "'kameng.provision'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


def test_a_suspending_hold_suspends_and_holds_payouts_a_payout_hold_only_holds_payouts():
    from kameng.api.holds import Hold, holds_of

    base = dict(site="demo", start=datetime(2026, 1, 1, tzinfo=UTC),
                end=datetime(2027, 1, 1, tzinfo=UTC), grace_until=datetime(2027, 1, 4, tzinfo=UTC))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    clean = state_at(Terms(**base), now)
    assert clean.state == "Active"
    assert not clean.payouts_held
    risk = state_at(Terms(**base, holds=(Hold("risk", "fraud rate 9%"),)), now)
    assert risk.state == "Suspended"
    assert "fraud rate 9%" in risk.message
    assert risk.payouts_held
    payout = state_at(Terms(**base, holds=(Hold("payout", "audit"),)), now)
    assert payout.state == "Active"
    assert payout.payouts_held
    expired = state_at(Terms(**base), datetime(2027, 2, 1, tzinfo=UTC))
    assert expired.payouts_held
    grace = state_at(Terms(**base), datetime(2027, 1, 2, tzinfo=UTC))
    assert not grace.payouts_held
    parsed = holds_of({"hold.kameng.io/risk": Hold("risk", "r", "t", "w").to_value(),
                       "hold.kameng.io/payout": "by hand", "other": "x"})
    assert [(h.kind, h.reason) for h in parsed] == [("payout", "by hand"), ("risk", "r")]


# --- Terminated (issue 11): the exit's annotation is the input, the state is terminal ---

MID = START + timedelta(days=100)


@pytest.mark.parametrize(("now", "state", "next_change"), [
    (MID - S, "Active", MID),  # the termination time is a boundary the clock wakes for
    (MID, "Terminated", None),  # the boundary belongs to the later state
    (GRACE_UNTIL + timedelta(days=999), "Terminated", None),
])
def test_terminated_from_its_time_on_and_for_ever(now, state, next_change):
    from dataclasses import replace
    lc = state_at(replace(TERMS, terminated_at=MID), now)
    assert (lc.state, lc.next_change) == (state, next_change)
    if state == "Terminated":
        assert lc.reason == "Terminated"
        assert (lc.selling, lc.mode, lc.payouts_held) == (False, "suspended", True)


def test_terminated_wins_over_suspension_and_a_renewal():
    from dataclasses import replace
    ended = replace(TERMS, terminated_at=MID, suspended=True,
                    end=END + timedelta(days=3650), grace_until=END + timedelta(days=3653))
    lc = state_at(ended, MID + S)
    assert lc.state == "Terminated"  # a longer term does not bring a terminated License back
    assert "new SubSite" in lc.message


def test_terminated_from_the_annotation_and_shown_in_time_left():
    from kameng.api.kinds import TERMINATED_AT_ANNOTATION
    from kameng.licensing.lifecycle import terminated_of, time_left
    obj = {"metadata": {"annotations": {TERMINATED_AT_ANNOTATION: "2030-04-11T00:00:00Z"}},
           "spec": {"subSite": "demo", "plan": "basic", "categories": ["game"],
                    "regions": ["CN-GD"],
                    "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
                    "fees": {"currency": "CNY", "baseAnnualFee": "0",
                             "settlementPeriod": "Monthly"}}}
    t = Terms.from_object(obj)
    assert t.terminated_at == MID
    assert state_at(t, MID).state == "Terminated"
    assert time_left(t, MID) == ("terminated", None)
    assert terminated_of({}) is None
    # A hand-written mark that is no time still terminates (never silently ignored).
    assert state_at(Terms.from_object({**obj, "metadata": {"annotations": {
        TERMINATED_AT_ANNOTATION: "yes"}}}), START).state == "Terminated"
