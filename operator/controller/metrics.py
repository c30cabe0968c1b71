"""Prometheus metrics of the operator, served on /metrics."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from kameng.api.conditions import PHASES

RECONCILE_DURATION = Histogram(
    "kameng_reconcile_duration_seconds", "Duration of one SubSite reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "kameng_reconcile_errors_total", "Reconciles that failed, by reason.", ["reason"],
)
RECONCILES = Counter("kameng_reconciles_total", "Reconciles run.")
# Why site loops woke: a poke by the kind of object that changed (child, subsite, license,
# rolepolicy, domain), or the loop's own timer (resync, a retry, a time-driven change). A
# reconcile count that grows without a cause a person can name is the question it answers.
WAKES = Counter("kameng_wakes_total", "Site loop wake-ups, by cause.", ["cause"])
BACKEND_CHECKS = Counter(
    "kameng_backend_checks_total",
    "Checks of a site's PostgreSQL role/database and Redis user (each a few statements).",
)
REDIS_RESTARTS = Counter(
    "kameng_redis_restarts_total",
    "Redis restarts seen (new run_id); each sets every site's ACL user again.",
)
SUBSITES = Gauge("kameng_subsites", "Managed SubSites by phase.", ["phase"])
CHILDREN_APPLIED = Counter(
    "kameng_children_applied_total", "Child objects applied because they differed.", ["kind"],
)

# License life cycle: one increment per transition (where its Event is posted).
LICENSE_TRANSITIONS = Counter(
    "kameng_license_transitions_total", "License state transitions, by new state.", ["state"],
)
LICENSE_NOTICES = Counter(
    "kameng_license_notices_total", "Expiry notices, by result (sent | failed).", ["result"],
)


def publish_phases(phases: Iterable[str | None]) -> None:
    """Set the by-phase gauge from the phase of every known site (zero for the rest)."""
    counts = dict.fromkeys(PHASES, 0)
    for p in phases:
        if p is not None:
            counts[p] = counts.get(p, 0) + 1
    for p, n in counts.items():
        SUBSITES.labels(phase=p).set(n)


def serve(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's metrics port
    start_http_server(port, addr=addr)
