"""Renewal invoices: the base fee for the time a renewal adds, posted once to the ledger.

An invoice is a claim on the partner for a future term, not income yet: it debits the
site's receivable and credits HQ's deferred fees. The statements keep recognising the
base fee period by period (:mod:`.statements`), so an invoice never changes a
statement's net payable twice; its kind (``invoice``) has no payable effect.

Idempotent by the renewal it bills (License, old end → new end): a page submitted twice
or a retry after a crash posts one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

from kameng.licensing.term import Term, format_time, renewal_fee

from . import repo
from .rules import Leg, Rates

DEFERRED_FEES = "hq:deferred_fees"


def receivable(site: str) -> str:
    return f"site:{site}:receivable"


@dataclass(frozen=True)
class Invoice:
    key: str
    site: str
    license: str
    currency: str
    amount: int  # fen
    before: Term
    after: Term

    @property
    def legs(self) -> list[Leg]:
        return [(receivable(self.site), self.amount), (DEFERRED_FEES, -self.amount)]


def renewal_invoice(license: str, site: str, rates: Rates, before: Term, after: Term
                    ) -> Invoice:
    return Invoice(key=f"renewal:{license}:{format_time(before.end)}:{format_time(after.end)}",
                   site=site, license=license, currency=rates.currency,
                   amount=renewal_fee(rates.base_annual_fee, before, after),
                   before=before, after=after)


async def post_invoice(conn: AsyncConnection, inv: Invoice, rates: Rates, at: datetime) -> bool:
    """Post ``inv`` (in the caller's transaction). False: already posted, or nothing to
    bill (no base fee)."""
    if inv.amount <= 0:
        return False
    return await repo.post_single(
        conn, key=inv.key, kind="invoice", site=inv.site, currency=inv.currency,
        amount=inv.amount, legs=inv.legs, rates=rates, event_at=at,
        inputs={"license": inv.license, "amount": inv.amount, "currency": inv.currency,
                "from": format_time(inv.before.end), "to": format_time(inv.after.end),
                "start": format_time(inv.after.start)})
