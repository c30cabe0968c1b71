"""Settlement metrics (stream lag and dead letters are the shared ones in
:mod:`kameng.workers.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

POSTINGS = Counter("kameng_ledger_entries_posted_total",
                   "Journal entries posted from order events.")
DUPLICATES = Counter("kameng_ledger_duplicate_events_total",
                     "Events already posted with the same inputs (no-ops).")
CONFLICTS = Counter("kameng_ledger_idempotency_conflicts_total",
                    "Events refused: their id was posted with other inputs.")
HELD_PAYOUTS = Gauge("kameng_ledger_held_payouts",
                     "Withdrawals waiting because the site's payouts are held.")
PAYOUTS = Counter("kameng_ledger_payouts_total", "Withdrawals settled, by outcome.",
                  ["outcome"])
INVOICES = Counter("kameng_ledger_renewal_invoices_total",
                   "Renewal invoices the worker posted on seeing a License's term grow.")
