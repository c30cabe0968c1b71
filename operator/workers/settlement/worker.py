"""The settlement worker: one replica of the ``settlement`` consumer group.

* Events: each batch the shared machinery hands over becomes ONE ledger transaction
  (:func:`kameng.ledger.repo.post_events`), committed before the ``XACK``; a failed batch
  is retried entry by entry by the machinery, a poison entry ends in the dead letters.
* An event whose id was posted with other inputs is refused: counted, logged and moved to
  the dead-letter stream at once (retrying cannot make it right).
* Housekeeping every ``interval``: withdrawals are paid, voided or held; periods that
  have ended are closed into statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from psycopg import AsyncConnection

from kameng.api.common import API_VERSION
from kameng.contracts.events import OrderEvent
from kameng.ledger import licenses as ledger_licenses
from kameng.ledger import repo, statements
from kameng.ledger import rules as ledger_rules
from kameng.ledger.payouts import settle_withdrawals
from kameng.licensing.term import Term, format_time
from kameng.payouts import PayoutProvider
from kameng.workers.streams import (
    SETTLEMENT_GROUP,
    ConsumerConfig,
    Entry,
    StreamConsumer,
    dead_letter_stream,
)

from . import metrics
from .licenses import LicenseBook

log = logging.getLogger(__name__)

GROUP = SETTLEMENT_GROUP


class Settlement:
    def __init__(self, dsn: str, redis, book: LicenseBook, provider: PayoutProvider,
                 config: ConsumerConfig | None = None, interval: float = 2.0) -> None:
        self.dsn = dsn
        self.book = book
        self.provider = provider
        self.interval = interval
        self.consumer = StreamConsumer(redis, config or ConsumerConfig(group=GROUP),
                                       self.handle, self.on_dead_letter, self.prepare)
        # Read-ahead entries decoded and hashed while the previous batch was in the
        # database: (stream, id) → (event, input hash). Entry ids are immutable, so a
        # decoded entry stays right however late it is handled.
        self._ready: dict[tuple[str, str], tuple[OrderEvent, str]] = {}
        self._conns: dict[str, AsyncConnection] = {}
        # What the ledger holds of each License (loaded once, then kept in step), so a
        # pass over unchanged Licenses costs no query: uid → term accounted; site →
        # latest recorded rates.
        self._accounted: dict[str, Term] | None = None
        self._rates_seen: dict[str, ledger_licenses.RateChange] | None = None
        # site → its recorded rate changes, oldest first: an event is posted at the rates
        # in force at its own time (loaded per site on first use, appended on change).
        self._history: dict[str, list[ledger_licenses.RateChange]] = {}
        self._track_lock = asyncio.Lock()

    async def _conn(self, role: str) -> AsyncConnection:
        conn = self._conns.get(role)
        if conn is None or conn.closed or conn.broken:
            conn = await AsyncConnection.connect(self.dsn, autocommit=True)
            self._conns[role] = conn
        return conn

    def prepare(self, batch: list[Entry]) -> None:
        """Decode and hash a read-ahead batch (the consumer calls it while the current
        batch is being posted: the worker's CPU work then overlaps PostgreSQL's). An entry
        that does not decode is left to :meth:`handle`, which fails it the usual way."""
        if len(self._ready) > 8 * max(self.consumer.cfg.batch, 1):
            self._ready.clear()  # read-ahead never handled (not expected): bound memory
        for e in batch:
            try:
                ev = OrderEvent.from_fields(e.fields)
                self._ready[(e.stream, e.id)] = (ev, repo.event_hash(ev))
            except Exception:  # noqa: S112 - decoded (and refused) again in handle
                continue

    def _decoded(self, batch: list[Entry]) -> tuple[list[OrderEvent], dict[int, str]]:
        events: list[OrderEvent] = []
        hashes: dict[int, str] = {}
        for e in batch:
            ready = self._ready.pop((e.stream, e.id), None)
            if ready is None:
                events.append(OrderEvent.from_fields(e.fields))
            else:
                events.append(ready[0])
                hashes[id(ready[0])] = ready[1]
        return events, hashes

    async def handle(self, batch: list[Entry]) -> None:
        await self.book.refresh()
        # Rate changes are recorded before anything is posted at the new rates, so the
        # statement's parts and the entries' shares change at the same moment. A failure
        # here must not stop the money: events are then posted at the rates recorded so
        # far, and housekeeping tries again.
        try:
            await self.track_licenses()
        except Exception:
            log.exception("License changes not recorded; posting at the recorded rates")
        events, hashes = self._decoded(batch)
        rates = {}
        for ev in events:
            r = self.book.rates(ev.site)
            if r is not None:
                rates[ev.site] = r
        for site in rates:
            if site not in self._history:
                self._history[site] = await ledger_licenses.rate_changes(
                    await self._conn("track"), site)
        conn = await self._conn("post")
        out = await repo.post_events(
            conn, events, rates, self.rates_at,
            lambda ev: hashes.get(id(ev)) or repo.event_hash(ev))
        metrics.POSTINGS.inc(out.posted)
        if out.duplicates:
            metrics.DUPLICATES.inc(out.duplicates)
        for c in out.conflicts:
            metrics.CONFLICTS.inc()
            log.error("event refused: its id was posted with other inputs",
                      extra={"key": c.key, "stored": c.stored_hash[:12],
                             "offered": c.offered_hash[:12]})
            for e, ev in zip(batch, events, strict=True):
                if ev.event_id == c.key and ev.event_id:
                    await self.consumer.dead_letter(
                        e, f"IdempotencyConflict: {c.key} was posted with other inputs")
                    break

    async def on_dead_letter(self, entry: Entry, reason: str) -> None:
        """An Event on the site's License, so `kubectl describe lic` shows that money
        did not post (the metric and the dead-letter stream have the details)."""
        log.error("settlement dead letter", extra={"site": entry.site, "id": entry.id})
        kube = self.book.kube
        rates = self.book.rates(entry.site)
        if kube is None or rates is None or not rates.license:
            return
        from kameng.kube import events
        await events.post(kube, {"apiVersion": API_VERSION, "kind": "License",
                                 "metadata": {"name": rates.license}},
                          "Warning", "SettlementDeadLetter",
                          f"event {entry.fields.get('event_id', '?')} of stream "
                          f"{entry.stream} was not posted: {reason[:300]}; it is in "
                          f"{dead_letter_stream(self.consumer.cfg.group)}")

    def rates_at(self, site: str, t: datetime) -> ledger_rules.Rates:
        """The site's rates in force at ``t`` (today's when nothing is recorded)."""
        hist = self._history.get(site)
        if hist:
            return ledger_licenses.rates_in_force(hist, t)
        current = self.book.rates(site)
        if current is None:  # post_events asks only for sites with a License
            raise ledger_rules.PostingError(f"no License in force for site {site!r}")
        return current

    async def track_licenses(self, now: datetime | None = None) -> None:
        """Record what changed in the Licenses since the last pass: a term end that grew
        (→ the renewal invoice, whoever renewed) and fees or plan that changed (→ a rate
        change the statements pro-rate by). See :mod:`kameng.ledger.licenses`."""
        async with self._track_lock:
            conn = await self._conn("track")
            if self._accounted is None or self._rates_seen is None:
                self._accounted = {uid: a.term for uid, a in
                                   (await ledger_licenses.accounted_terms(conn)).items()}
                self._rates_seen = await ledger_licenses.latest_rate_changes(conn)
            for v in self.book.views():
                at = now or datetime.now(UTC)
                site = v.terms.site
                seen = self._rates_seen.get(site)
                if seen is None or not seen.same_terms(v.rates, v.plan):
                    await ledger_licenses.record_rates(conn, site, v.rates, v.plan, at)
                    # Read back: another replica may have recorded it first, earlier;
                    # this one must price events by the same time as the statement.
                    hist = await ledger_licenses.rate_changes(conn, site)
                    self._rates_seen[site] = hist[-1]
                    if site in self._history:
                        self._history[site] = hist
                if not v.uid or v.terms.terminated_at is not None:
                    continue  # a terminated License is not renewed by a later end
                mark = self._accounted.get(v.uid)
                if mark is not None and v.terms.end <= mark.end:
                    continue
                term = Term(v.terms.start, v.terms.end)
                self._accounted[v.uid], inv = await ledger_licenses.account_term(
                    conn, v.uid, v.rates.license, site, term, v.rates, at)
                if inv is not None:
                    metrics.INVOICES.inc()
                    log.info("renewal invoiced", extra={
                        "license": inv.license, "site": site, "amount": inv.amount,
                        "from": format_time(inv.before.end), "to": format_time(inv.after.end)})

    async def housekeeping(self, now: datetime | None = None) -> None:
        await self.book.refresh()
        await self.track_licenses(now)
        conn = await self._conn("house")
        rnd = await settle_withdrawals(conn, self.provider, self.book.held, self.book.rates)
        metrics.HELD_PAYOUTS.set(rnd.held)
        if rnd.paid:
            metrics.PAYOUTS.labels("paid").inc(rnd.paid)
        if rnd.voided:
            metrics.PAYOUTS.labels("voided").inc(rnd.voided)
        await self.close_due(conn, now or datetime.now(UTC))

    async def close_due(self, conn: AsyncConnection, now: datetime) -> int:
        """Close every period that has ended, oldest first per site."""
        rows = await (await conn.execute(
            "SELECT DISTINCT e.site, e.period_start FROM ledger.entries e"
            " WHERE NOT EXISTS (SELECT 1 FROM ledger.statements s WHERE s.site = e.site"
            "   AND s.period_start = e.period_start) ORDER BY 1, 2")).fetchall()
        closed = 0
        for site, start in rows:
            r = self.book.rates(site)
            if r is None:
                continue
            _, end = ledger_rules.period_bounds(r.period, start)
            if end <= now:
                await statements.close(conn, site, r, start)
                closed += 1
        return closed

    async def run(self, stop: asyncio.Event) -> None:
        async def house() -> None:
            while not stop.is_set():
                try:
                    await self.housekeeping()
                except Exception:
                    log.exception("settlement housekeeping failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

        try:
            await asyncio.gather(self.consumer.run(stop), house())
        finally:
            for c in self._conns.values():
                await c.close()
