"""License and RolePolicy status are pure functions of spec and clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from kameng.controller.agreements import (
    Agreements,
    differs,
    license_lifecycle,
    license_status,
    rolepolicy_status,
)

END = datetime(2027, 1, 1, tzinfo=UTC)
SPEC = {"subSite": "s", "plan": "basic", "categories": ["game-cards"],
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
        "gracePeriod": "72h"}


@pytest.mark.parametrize(("now", "state", "ready", "reason"), [
    (END - timedelta(days=100), "Active", "True", "Active"),
    (END - timedelta(days=29), "ExpiringSoon", "True", "ExpiringSoon"),
    (END + timedelta(hours=1), "Grace", "False", "InGrace"),
    (END + timedelta(hours=73), "Expired", "False", "Expired"),
    (datetime(2025, 6, 1, tzinfo=UTC), None, "False", "NotYetValid"),
])
def test_license_state_follows_the_clock(now, state, ready, reason):
    st = license_status(SPEC, 3, None, now)
    assert st.get("state") == state
    assert st["expiresAt"] == "2027-01-01T00:00:00Z"
    assert st["graceUntil"] == "2027-01-04T00:00:00Z"
    assert st["observedGeneration"] == 3
    cond = st["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", ready, reason)


def test_suspension_wins_and_names_the_reason():
    st = license_status({**SPEC, "suspended": True, "suspendReason": "risk"}, 1, None,
                        END - timedelta(days=100))
    assert st["state"] == "Suspended"
    assert "risk" in st["conditions"][0]["message"]


def test_unchanged_status_needs_no_write_and_keeps_transition_time():
    # Half a day into day 100: five hours later the coarse time left still says 100d.
    now = END - timedelta(days=100, hours=12)
    first = license_status(SPEC, 1, None, now)
    later = license_status(SPEC, 1, first, now + timedelta(hours=5))
    assert later["conditions"][0]["lastTransitionTime"] == \
        first["conditions"][0]["lastTransitionTime"]
    assert not differs(first, later)
    expiring = license_status(SPEC, 1, first, END - timedelta(days=1))
    assert differs(first, expiring)
    assert expiring["conditions"][0]["lastTransitionTime"] == \
        first["conditions"][0]["lastTransitionTime"]  # Ready stayed True


def next_change(now: datetime) -> datetime | None:
    return license_lifecycle(SPEC, now).next_change


def test_next_change_is_the_nearest_boundary():
    assert next_change(END - timedelta(days=100)) == END - timedelta(days=30)
    assert next_change(END - timedelta(days=1)) == END
    assert next_change(END + timedelta(hours=1)) == END + timedelta(hours=72)
    assert next_change(END + timedelta(days=10)) is None


def test_the_clock_wakes_at_the_first_license_to_change():
    ag = Agreements(kube=None)  # type: ignore[arg-type] - only the pure part is used
    later = {**SPEC, "term": {"start": "2026-01-01T00:00:00Z", "end": "2028-01-01T00:00:00Z"}}
    ag.licenses = {"a": {"metadata": {"name": "a"}, "spec": SPEC},
                   "b": {"metadata": {"name": "b"}, "spec": later}}
    # Its time left steps a day at a time ("100d" → "99d"); that is a change too.
    assert ag.next_change(END - timedelta(days=100, hours=12)) == END - timedelta(days=100)
    assert ag.due_at("b", END - timedelta(days=100, hours=12)) == \
        datetime(2028, 1, 1, tzinfo=UTC) - timedelta(days=465)
    # Within the last day: the state change at END comes after the hour steps.
    assert ag.next_change(END - timedelta(hours=2, minutes=30)) == END - timedelta(hours=2)
    assert ag.next_change(END + timedelta(days=3650)) is None


def test_rolepolicy_status_counts_roles_and_users():
    spec = {"roles": [{"name": "a", "permissions": ["orders:read"]},
                      {"name": "b", "permissions": ["finance:read"]}]}
    st = rolepolicy_status(spec, 2, 5, None, END)
    assert (st["roleCount"], st["usedBy"], st["observedGeneration"]) == (2, 5, 2)
    assert "used by 5" in st["conditions"][0]["message"]
    assert differs(st, rolepolicy_status(spec, 2, 6, st, END))


def test_time_left_is_written_once_per_step_not_per_reconcile():
    """The printer column's text changes a day at a time far from the end, so a day of
    reconciles costs one status write; close to the end it steps in hours, then 10 m."""
    now = END - timedelta(days=100, hours=12)
    first = license_status(SPEC, 1, None, now)
    assert first["expiresIn"] == "100d"
    writes, prev, t = 0, first, now
    while t < now + timedelta(days=1):
        t += timedelta(minutes=7)
        cur = license_status(SPEC, 1, prev, t)
        if differs(prev, cur):
            writes, prev = writes + 1, cur
    assert writes == 1
    assert prev["expiresIn"] == "99d"
    assert license_status(SPEC, 1, None, END - timedelta(hours=30))["expiresIn"] == "30h"
    assert license_status(SPEC, 1, None, END - timedelta(minutes=42))["expiresIn"] == "50m"
    assert license_status(SPEC, 1, None, END - timedelta(seconds=200))["expiresIn"] == "4m"
    assert license_status(SPEC, 1, None, END - timedelta(seconds=20))["expiresIn"] == "1m"
    assert license_status(SPEC, 1, None, END + timedelta(hours=10))["expiresIn"] == "grace 2d"
    assert license_status(SPEC, 1, None, END + timedelta(days=5))["expiresIn"] == "expired"


def test_the_tick_after_the_sleep_handles_the_license_that_was_due():
    """The clock sleeps until a License's change and then syncs it. Recomputed after
    the sleep, the passed boundary is in the past: the License must still count as due."""
    synced: list[str] = []

    class Kube:
        async def get(self, path: str, kind: str = "") -> dict:
            return ag.licenses[path.rsplit("/", 1)[-1]]

    ag = Agreements(kube=Kube())  # type: ignore[arg-type]

    async def sync(body: dict, now: datetime) -> None:
        synced.append(body["metadata"]["name"])
    ag._sync_license = sync  # type: ignore[method-assign]
    later = {**SPEC, "term": {"start": "2026-01-01T00:00:00Z", "end": "2028-01-01T12:00:00Z"}}
    ag.licenses = {"a": {"metadata": {"name": "a"}, "spec": SPEC},
                   "b": {"metadata": {"name": "b"}, "spec": later}}
    before = END - timedelta(days=30, seconds=1)
    nxt = ag.next_change(before)
    assert nxt == END - timedelta(days=30)
    asyncio.run(ag.tick(nxt + timedelta(seconds=0.5)))
    assert synced == ["a"]
