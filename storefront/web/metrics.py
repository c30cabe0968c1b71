"""Prometheus metrics. A private registry per app so tests can run several apps.

With several worker processes in a pod (``storefront.workers``) the metrics are in
Prometheus' multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): each worker writes its samples
to files there and :meth:`Metrics.render` aggregates all of them, whichever worker is
scraped. Gauges say how they aggregate (``multiprocess_mode``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Histogram(
            "kameng_storefront_request_seconds", "HTTP request latency",
            ["method", "route", "status"], registry=r,
        )
        self.orders = Counter(
            "kameng_storefront_orders_total", "Order state transitions", ["status"], registry=r
        )
        self.keys_allocated = Counter(
            "kameng_storefront_keys_allocated_total", "Card keys allocated (HQ)", registry=r
        )
        self.notifications = Counter(
            "kameng_storefront_payment_notifications_total", "Payment notifications received",
            ["result"], registry=r,
        )
        self.license_mode = Gauge(
            "kameng_storefront_license_mode", "1 for the current effective mode", ["mode"],
            registry=r, multiprocess_mode="livemostrecent",
        )
        self.sandbox_payments = Gauge(
            "kameng_storefront_sandbox_payments_enabled",
            "1 while HQ's sandbox payment channel (one-click, no real money) is enabled",
            registry=r, multiprocess_mode="livemax",
        )
        self.background_leader = Gauge(
            "kameng_storefront_background_leader",
            "1 in the worker process that runs the pod's background loops (summed over the"
            " pod's live workers: 1)", registry=r, multiprocess_mode="livesum",
        )
        self.catalog_syncs = Counter(
            "kameng_storefront_catalog_syncs_total", "Catalogue syncs", ["result"], registry=r
        )

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        pod = CollectorRegistry()
        MultiProcessCollector(pod, shared)
        return generate_latest(pod)
