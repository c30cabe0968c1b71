"""Posting rules, pure: which legs an event becomes. No I/O, no clock.

Accounts (per currency; debit positive, credit negative; every entry sums to zero):

* ``hq:escrow`` — the customers' money HQ holds (an asset, debit balance);
* ``site:<s>:payable`` — what HQ owes the partner (a liability, credit balance; the
  database refuses to let it become a debit: the available balance never goes negative);
* ``site:<s>:withdrawals`` — requested withdrawals on hold (credit while pending);
* ``site:<s>:wallets`` — what the site's customers hold in their wallets (a liability,
  credit): a top-up through HQ's channel is the money entering escrow; an order paid
  from a wallet only moves it on to the partner, so it is not new escrow money;
* ``hq:revenue_share`` — HQ's share of sales (income, credit);
* ``hq:fee_income`` — the base annual fee, pro-rated per statement period (income).

A sale of ``A`` with share ``S`` (per the category's rate in force): escrow +A (the
wallets account instead when the customer paid from a wallet),
payable −(A−S), revenue_share −S. A refund of ``R`` reverses the share in proportion,
cumulatively rounded so that refunding everything reverses exactly ``S`` and the reversed
share never exceeds it. A withdrawal hold moves ``W`` from payable to withdrawals; paid
sends it out of escrow, voided returns it to payable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from kameng.contracts.money import to_fen

ESCROW = "hq:escrow"
REVENUE_SHARE = "hq:revenue_share"
FEE_INCOME = "hq:fee_income"

PERIODS = ("Daily", "Weekly", "Monthly")


class PostingError(ValueError):
    """An event the ledger must not post (the message names why)."""


def payable(site: str) -> str:
    return f"site:{site}:payable"


def withdrawals(site: str) -> str:
    return f"site:{site}:withdrawals"


def wallets(site: str) -> str:
    return f"site:{site}:wallets"


FUNDINGS = ("channel", "wallet")


def funding_of(event_funding: str) -> str:
    """The ledger's funding of an order event: ``wallet``, or ``channel`` (also for events
    written before the field existed, which were all paid through the channel)."""
    return "wallet" if event_funding == "wallet" else "channel"


def source(site: str, funding: str) -> str:
    """The account an order's money comes from (and a refund's goes back to)."""
    return wallets(site) if funding == "wallet" else ESCROW


@dataclass(frozen=True)
class Rates:
    """What a License said when an entry was made; recorded on the entry as JSON."""

    currency: str = "CNY"
    share_bp: dict[str, int] = field(default_factory=dict)  # category → basis points
    base_annual_fee: int = 0  # fen
    period: str = "Monthly"
    license: str = ""
    generation: int = 0

    @classmethod
    def from_fees(cls, fees: Any, license: str = "", generation: int = 0) -> Rates:
        """From a License's ``spec.fees`` (typed model or its camelCase dict)."""
        get = (lambda k, a: fees.get(k)) if isinstance(fees, dict) else \
            (lambda k, a: getattr(fees, a))
        shares = get("revenueShare", "revenue_share") or []
        bp = {}
        for r in shares:
            cat = r["category"] if isinstance(r, dict) else r.category
            pct = r["percent"] if isinstance(r, dict) else r.percent
            bp[cat] = percent_to_bp(pct)
        return cls(currency=get("currency", "currency") or "CNY", share_bp=bp,
                   base_annual_fee=to_fen(str(get("baseAnnualFee", "base_annual_fee") or "0")),
                   period=get("settlementPeriod", "settlement_period") or "Monthly",
                   license=license, generation=generation)

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "share_bp": dict(sorted(self.share_bp.items())),
                "base_annual_fee": self.base_annual_fee, "period": self.period,
                "license": self.license, "generation": self.generation}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Rates:
        return cls(currency=d.get("currency", "CNY"),
                   share_bp={k: int(v) for k, v in d.get("share_bp", {}).items()},
                   base_annual_fee=int(d.get("base_annual_fee", 0)),
                   period=d.get("period", "Monthly"), license=d.get("license", ""),
                   generation=int(d.get("generation", 0)))


def percent_to_bp(percent: str | int | Decimal) -> int:
    """"12.5" → 1250 basis points; finer than a basis point is refused, not rounded."""
    bp = Decimal(str(percent)) * 100
    if bp != bp.to_integral_value() or not 0 <= bp <= 10_000:
        raise PostingError(f"revenue share {percent!r} is not a percentage with at most "
                           "2 decimals between 0 and 100")
    return int(bp)


def _round_half_up(num: int, den: int) -> int:
    return (2 * num + den) // (2 * den)


round_half_up = _round_half_up  # the ledger's one rounding, for its other modules


def share_of(amount: int, bp: int) -> int:
    """HQ's share of ``amount`` fen at ``bp`` basis points, rounded half up to the fen."""
    return _round_half_up(amount * bp, 10_000)


def refund_share(share: int, paid: int, refunded_before: int, refund: int) -> int:
    """The share reversed by a refund: cumulative rounding, so the parts add up to the whole."""
    if refund <= 0:
        raise PostingError("a refund must be positive")
    if refunded_before + refund > paid:
        raise PostingError(f"refund of {refund} fen exceeds what is left of the payment "
                           f"({paid - refunded_before} fen)")
    after = _round_half_up(share * (refunded_before + refund), paid)
    before = _round_half_up(share * refunded_before, paid)
    return after - before


Leg = tuple[str, int]  # (account name, signed amount)


def sale_legs(site: str, amount: int, share: int, funding: str = "channel") -> list[Leg]:
    legs = [(source(site, funding), amount), (payable(site), -(amount - share)),
            (REVENUE_SHARE, -share)]
    return [leg for leg in legs if leg[1] != 0]


def refund_legs(site: str, amount: int, share_back: int, funding: str = "channel"
                ) -> list[Leg]:
    legs = [(source(site, funding), -amount), (payable(site), amount - share_back),
            (REVENUE_SHARE, share_back)]
    return [leg for leg in legs if leg[1] != 0]


def topup_legs(site: str, amount: int) -> list[Leg]:
    return [(ESCROW, amount), (wallets(site), -amount)]


def hold_legs(site: str, amount: int) -> list[Leg]:
    return [(payable(site), amount), (withdrawals(site), -amount)]


def paid_legs(site: str, amount: int) -> list[Leg]:
    return [(withdrawals(site), amount), (ESCROW, -amount)]


def void_legs(site: str, amount: int) -> list[Leg]:
    return [(withdrawals(site), amount), (payable(site), -amount)]


def fee_legs(site: str, amount: int) -> list[Leg]:
    return [(payable(site), amount), (FEE_INCOME, -amount)]


def input_hash(**inputs: Any) -> str:
    """SHA-256 of the inputs that decide an entry's legs (canonical JSON)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- statement periods -------------------------------------------------------------


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def period_bounds(period: str, t: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the ``period`` (UTC calendar: day, ISO week, month) holding ``t``."""
    t = _utc(t)
    return _day_bounds(period, t.year, t.month, t.day)


@lru_cache(maxsize=4096)
def _day_bounds(period: str, year: int, month: int, day_: int) -> tuple[datetime, datetime]:
    # Cached: a batch of thousands of events falls on a handful of days.
    day = datetime(year, month, day_, tzinfo=UTC)
    if period == "Daily":
        return day, day + timedelta(days=1)
    if period == "Weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "Monthly":
        start = day.replace(day=1)
        end = (start.replace(year=start.year + 1, month=1) if start.month == 12
               else start.replace(month=start.month + 1))
        return start, end
    raise PostingError(f"unknown settlement period {period!r}")


def base_fee_share(annual_fee: int, period: str, start: datetime, end: datetime) -> int:
    """The base annual fee pro-rated to one period: a month is 1/12, a week 7/365 of a
    year, a day 1/365 (rounded half up to the fen). Months are equal twelfths, as a
    partner reads "12 000 a year" as "1 000 a month"."""
    if period == "Monthly":
        return _round_half_up(annual_fee, 12)
    days = (end - start).days
    return _round_half_up(annual_fee * days, 365)
