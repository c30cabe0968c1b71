"""Prometheus metrics of the operator, served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILE_DURATION = Histogram(
    "kameng_reconcile_duration_seconds", "Duration of one SubSite reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "kameng_reconcile_errors_total", "Reconciles that failed, by reason.", ["reason"],
)
RECONCILES = Counter("kameng_reconciles_total", "Reconciles run.")
SUBSITES = Gauge("kameng_subsites", "Managed SubSites by phase.", ["phase"])
API_WRITES = Counter(
    "kameng_api_writes_total", "Write requests the operator sent to the API server.",
    ["verb", "kind"],
)
CHILDREN_APPLIED = Counter(
    "kameng_children_applied_total", "Child objects applied because they differed.", ["kind"],
)

PHASES = ("Pending", "Provisioning", "Ready", "Suspended", "Expired", "Terminating", "Failed")


class PhaseTracker:
    """Keeps the by-phase gauge exact: one phase per site, removed sites forgotten."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        for p in PHASES:
            SUBSITES.labels(phase=p).set(0)

    def set(self, site: str, phase: str) -> None:
        self._phases[site] = phase
        self._publish()

    def forget(self, site: str) -> None:
        self._phases.pop(site, None)
        self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for p in self._phases.values():
            counts[p] = counts.get(p, 0) + 1
        for p, n in counts.items():
            SUBSITES.labels(phase=p).set(n)


def serve(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's metrics port
    start_http_server(port, addr=addr)
