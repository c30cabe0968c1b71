"""Prometheus metrics. A private registry per app so tests can run several apps."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
            registry=r,
        )
        self.sandbox_payments = Gauge(
            "kameng_storefront_sandbox_payments_enabled",
            "1 while HQ's sandbox payment channel (one-click, no real money) is enabled",
            registry=r,
        )
        self.catalog_syncs = Counter(
            "kameng_storefront_catalog_syncs_total", "Catalogue syncs", ["result"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
