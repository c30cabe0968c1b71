"""Prometheus metrics. A private registry per app so tests can run several apps.

With several worker processes in a pod (``storefront.workers``) the metrics are in
Prometheus' multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): each worker writes its samples
to files there and :meth:`Metrics.render` aggregates all of them, whichever worker is
scraped. Gauges say how they aggregate (``multiprocess_mode``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

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
        self.page_fast_hits = Counter(
            "kameng_storefront_page_fast_hits_total",
            "Catalogue page hits answered before the middleware (shop.fast_path)", registry=r,
        )

        # KPIs over the last 30 days (kameng_storefront.hq.kpis; HQ only). Gauges, because
        # they are a window recomputed from HQ's records. Labels are bounded: site by the
        # site-credential registry, category by HQ's catalogue (capped, rest "other").
        kpi = ["site", "category"]
        self.kpi_gmv = Gauge("kameng_kpi_gmv_yuan", "GMV, last 30 days (refunds deducted)",
                             kpi, registry=r)
        self.kpi_orders = Gauge("kameng_kpi_orders", "Paid orders, last 30 days", kpi,
                                registry=r)
        self.kpi_visits = Gauge("kameng_kpi_visits", "Shop visits, last 30 days (reported)",
                                kpi, registry=r)
        self.kpi_refunds = Gauge("kameng_kpi_refunds", "Refunded orders, last 30 days", kpi,
                                 registry=r)
        self.kpi_complaints = Gauge("kameng_kpi_complaints",
                                    "Disputes opened, last 30 days (reported)", kpi, registry=r)
        self.kpi_conversion = Gauge("kameng_kpi_conversion_ratio",
                                    "Paid orders / visits, last 30 days", ["site"], registry=r)
        self.kpi_repeat_rate = Gauge("kameng_kpi_repeat_customer_ratio",
                                     "Customers who had paid before / paying customers",
                                     ["site"], registry=r)
        self.kpi_refund_rate = Gauge("kameng_kpi_refund_ratio", "Refunded / paid orders",
                                     ["site"], registry=r)
        self.kpi_complaint_rate = Gauge("kameng_kpi_complaint_ratio", "Disputes / paid orders",
                                        ["site"], registry=r)
        # Support tickets (HQ only): bounded by the routing table's teams and priorities.
        self.tickets_open = Gauge("kameng_tickets_open", "Open tickets per HQ team", ["team"],
                                  registry=r)
        self.tickets_breached = Gauge(
            "kameng_tickets_sla_breached",
            "Open tickets past their first-answer deadline", ["team", "priority"], registry=r)
        # Waits for a database connection that gave up (psycopg_pool.PoolTimeout): the pool
        # is too small for the load or PostgreSQL does not answer (alert
        # KamengStorefrontDatabaseTimeouts).
        self.db_timeouts = Counter("kameng_storefront_db_timeouts_total",
                                   "Database connection waits that timed out", registry=r)
        # Shop only: visits counted by page kind (bounded: the shop's own routes).
        self.visits = Counter("kameng_storefront_visits_total", "Shop page visits", ["page"],
                              registry=r)
        self._visit_children: dict[str, Any] = {}

    def visit_counter(self, page: str) -> Any:
        """``visits`` for ``page``, the child looked up once: ``labels()`` validates and
        locks on every call, a measurable share of a cached catalogue hit."""
        child = self._visit_children.get(page)
        if child is None:
            child = self._visit_children[page] = self.visits.labels(page)
        return child

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        pod = CollectorRegistry()
        MultiProcessCollector(pod, shared)
        return generate_latest(pod)
