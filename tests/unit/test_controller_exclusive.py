"""Which peers a ClusterKopfPeering object says are alive (the standalone check)."""

from __future__ import annotations

from datetime import UTC, datetime

from kameng.controller.exclusive import live_peers

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_only_peers_seen_within_their_lifetime_are_alive() -> None:
    peering = {"status": {
        "alive@1": {"priority": 1, "lastseen": "2030-01-01T11:59:30+00:00", "lifetime": 60},
        "dead@2": {"priority": 1, "lastseen": "2030-01-01T11:58:00+00:00", "lifetime": 60},
        "gone@3": {"priority": 1, "lastseen": "2030-01-01T11:59:59+00:00", "lifetime": 0},
        "naive@4": {"priority": 1, "lastseen": "2030-01-01T11:59:50", "lifetime": 60},
        "broken@5": {"lastseen": "not a time"},
    }}
    assert live_peers(peering, NOW) == ["alive@1", "naive@4"]


def test_no_peering_object_means_no_peers() -> None:
    assert live_peers(None, NOW) == []
    assert live_peers({"metadata": {"name": "kameng"}}, NOW) == []
