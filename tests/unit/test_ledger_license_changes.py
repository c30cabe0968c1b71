"""Pure rules of kameng.ledger.licenses: rates in force, base fee per part of a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kameng.ledger.licenses import RateChange, base_fee_parts, rates_in_force
from kameng.ledger.rules import Rates, base_fee_share

OCT, NOV = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
R12 = Rates(base_annual_fee=1_200_000, share_bp={"game-cards": 800}, generation=1)
R18 = Rates(base_annual_fee=1_800_000, share_bp={"game-cards": 1000}, generation=2)


def test_without_a_change_the_period_costs_what_it_always_did():
    for period, start, end in (("Monthly", OCT, NOV),
                               ("Weekly", OCT, OCT + timedelta(days=7)),
                               ("Daily", OCT, OCT + timedelta(days=1))):
        parts = base_fee_parts([], R12, period, start, end)
        assert [p.amount for p in parts] == [base_fee_share(1_200_000, period, start, end)]
        # One change before the period: the same single part, at its rates.
        parts = base_fee_parts([RateChange(start - timedelta(days=40), R18)], R12, period,
                               start, end)
        assert [p.amount for p in parts] == [base_fee_share(1_800_000, period, start, end)]


def test_a_change_inside_splits_the_period_to_the_second():
    at = datetime(2026, 10, 11, tzinfo=UTC)
    parts = base_fee_parts([RateChange(OCT - timedelta(days=9), R12), RateChange(at, R18)],
                           R18, "Monthly", OCT, NOV)
    # 100 000 × 10/31 = 32 258.06 → 32 258; 150 000 × 21/31 = 101 612.90 → 101 613
    assert [(p.start, p.end, p.amount) for p in parts] == [(OCT, at, 32258), (at, NOV, 101613)]
    # Daily: 1 200 000 / 365 × 0.25 = 821.92 → 822; 1 800 000 / 365 × 0.75 = 3 698.63 → 3 699
    day = OCT + timedelta(days=1)
    six = OCT + timedelta(hours=6)
    parts = base_fee_parts([RateChange(OCT, R12), RateChange(six, R18)], R18, "Daily", OCT, day)
    assert [p.amount for p in parts] == [822, 3699]


def test_changes_at_the_bounds_and_changes_without_a_fee_change_make_no_line():
    plan_only = RateChange(datetime(2026, 10, 20, tzinfo=UTC), R12, plan="flagship")
    share_only = RateChange(datetime(2026, 10, 21, tzinfo=UTC),
                            Rates(base_annual_fee=1_200_000, share_bp={"game-cards": 900}))
    at_end = RateChange(NOV, R18)
    parts = base_fee_parts([RateChange(OCT, R12), plan_only, share_only, at_end], R18,
                           "Monthly", OCT, NOV)
    assert [p.amount for p in parts] == [100000]
    # All recorded changes later than the period: the first one is what was known.
    parts = base_fee_parts([RateChange(NOV + timedelta(days=3), R18)], R12, "Monthly",
                           OCT, NOV)
    assert [p.amount for p in parts] == [150000]


def test_rates_in_force_at_a_time_and_what_counts_as_a_change():
    a, b = RateChange(OCT, R12), RateChange(datetime(2026, 10, 11, tzinfo=UTC), R18)
    assert rates_in_force([a, b], OCT - timedelta(days=1)) is R12  # before: the first
    assert rates_in_force([a, b], OCT) is R12
    assert rates_in_force([a, b], b.effective_at - timedelta(seconds=1)) is R12
    assert rates_in_force([a, b], b.effective_at) is R18  # the boundary: the later one
    # A new generation alone (a renewal edits the spec) is not a change of rates.
    assert a.same_terms(Rates(base_annual_fee=1_200_000, share_bp={"game-cards": 800},
                              generation=7), "")
    assert not a.same_terms(R12, "flagship")
    assert not a.same_terms(R18, "")
