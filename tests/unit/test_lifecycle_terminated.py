"""The Terminated branch of the license life cycle (annotation kameng.io/terminated-at):
the words a person reads and the renewal refusal, exactly (issue 15: these were the
surviving mutants of licensing/lifecycle.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kameng.api.kinds import TERMINATED_AT_ANNOTATION
from kameng.licensing.lifecycle import Terms, not_renewable, state_at, terminated_of, time_left

START = datetime(2030, 1, 1, tzinfo=UTC)
END = datetime(2031, 1, 1, tzinfo=UTC)
AT = datetime(2030, 4, 11, 12, 30, tzinfo=UTC)
TERMS = Terms(site="demo", start=START, end=END, grace_until=END + timedelta(hours=72),
              terminated_at=AT)


def license_object(annotations: dict[str, str] | None, name: str | None = "demo"
                   ) -> dict[str, Any]:
    md: dict[str, Any] = {"annotations": annotations}
    if name is not None:
        md["name"] = name
    return {"metadata": md}


def test_the_terminated_message_says_what_happened_and_how_to_undo_it() -> None:
    lc = state_at(TERMS, AT)
    assert lc.message == (
        "terminated 2030-04-11T12:30:00Z: the site was exported and removed; a renewal "
        "needs a new SubSite and License (or HQ reinstates this one by removing its "
        "annotation kameng.io/terminated-at)")
    assert (lc.state, lc.reason, lc.next_change) == ("Terminated", "Terminated", None)


def test_terminated_ends_time_left_only_from_its_time_on() -> None:
    assert time_left(TERMS, AT) == ("terminated", None)
    assert time_left(TERMS, AT - timedelta(microseconds=1))[0] != "terminated"
    assert time_left(replace(TERMS, terminated_at=None), AT)[0] != "terminated"


def test_a_terminated_license_cannot_be_renewed_and_says_why() -> None:
    obj = license_object({TERMINATED_AT_ANNOTATION: "2030-04-11T12:30:00Z"})
    assert not_renewable(obj) == (
        "License demo was terminated 2030-04-11T12:30:00Z (its site was exported and "
        "removed); a renewal needs a new SubSite and License")


def test_a_hand_written_mark_that_is_no_time_still_refuses_renewal() -> None:
    obj = license_object({TERMINATED_AT_ANNOTATION: "yes"}, name="shop-7")
    assert not_renewable(obj) == (
        "License shop-7 was terminated 0001-01-01T00:00:00Z (its site was exported and "
        "removed); a renewal needs a new SubSite and License")
    assert terminated_of({TERMINATED_AT_ANNOTATION: "yes"}) == datetime.min.replace(tzinfo=UTC)


def test_an_object_without_a_name_is_refused_without_inventing_one() -> None:
    assert not_renewable(license_object({TERMINATED_AT_ANNOTATION: "2030-04-11T12:30:00Z"},
                                        name=None)) == (
        "License  was terminated 2030-04-11T12:30:00Z (its site was exported and removed); "
        "a renewal needs a new SubSite and License")


@pytest.mark.parametrize("obj", [
    {},
    {"metadata": None},
    {"metadata": {}},
    license_object(None),
    license_object({}),
    license_object({"kameng.io/hold-risk": "x", "terminated-at": "2030-04-11T12:30:00Z"}),
])
def test_a_license_not_terminated_is_renewable(obj: dict[str, Any]) -> None:
    assert not_renewable(obj) is None


def test_the_annotation_is_read_from_the_objects_own_metadata() -> None:
    # Elsewhere in the object (a spec field of that name) is no termination.
    obj = {"metadata": {"name": "demo"},
           "spec": {"annotations": {TERMINATED_AT_ANNOTATION: "2030-04-11T12:30:00Z"}},
           "annotations": {TERMINATED_AT_ANNOTATION: "2030-04-11T12:30:00Z"}}
    assert not_renewable(obj) is None
