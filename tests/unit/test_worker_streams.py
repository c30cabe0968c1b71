"""The trim floor: the lowest entry any consumer group still needs."""

from __future__ import annotations

from kameng.workers.streams import trim_floor


def g(name: str, last: str, pending: int = 0) -> dict:
    return {"name": name, "last-delivered-id": last, "pending": pending}


def test_oldest_pending_of_any_group_is_kept():
    groups = [g("settlement", "10-0"), g("risk", "9-0", pending=2)]
    assert trim_floor(groups, {"settlement": None, "risk": "7-3"}, ()) == "7-3"


def test_fully_acknowledged_groups_keep_from_the_next_id():
    groups = [g("settlement", "10-4"), g("risk", "12-0")]
    assert trim_floor(groups, {}, ()) == "10-5"


def test_a_required_group_that_has_not_joined_blocks_trimming():
    assert trim_floor([g("settlement", "10-0")], {}, ("settlement", "risk")) is None


def test_nothing_read_yet_means_nothing_to_trim():
    assert trim_floor([g("settlement", "0-0")], {}, ()) is None
    assert trim_floor([], {}, ()) is None


def test_pending_older_than_another_groups_position_wins():
    groups = [g("a", "5-0", pending=1), g("b", "3-0")]
    assert trim_floor(groups, {"a": "4-0", "b": None}, ()) == "3-1"
