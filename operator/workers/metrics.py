"""Prometheus metrics of the stream consumers, labelled by worker group (bounded) and,
for lag only, by site (one series per sub-site: bounded by the number of SubSites)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PROCESSED = Counter("kameng_stream_entries_processed_total",
                    "Stream entries applied and acknowledged.", ["group"])
FAILED = Counter("kameng_stream_entries_failed_total",
                 "Deliveries whose handler failed (the entry is retried).", ["group"])
CLAIMED = Counter("kameng_stream_entries_claimed_total",
                  "Pending entries taken over from another consumer.", ["group"])
DEAD_LETTERS = Counter("kameng_stream_dead_letters_total",
                       "Entries moved to the dead-letter stream after too many deliveries.",
                       ["group"])
LAG = Gauge("kameng_stream_lag_entries",
            "Entries of a site's stream not yet delivered to the group.", ["group", "site"])
