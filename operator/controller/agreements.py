"""Status of Licenses and RolePolicies: what `kubectl get lic,rp` shows at a glance.

The License's state is the one life cycle of :mod:`kameng.licensing.lifecycle`, computed
from spec and clock alone, so the status is level-based: a watch event recomputes it,
the :class:`LicenseClock` wakes exactly when the next License changes state by time
alone, and the API is written only when the result differs from what the object says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from kameng.api import conditions as c
from kameng.api.common import API_VERSION
from kameng.api.holds import Hold, holds_of
from kameng.api.license import (
    ACTIVE,
    DEFAULT_NOTICE_LEADS,
    GRACE,
    PENDING,
    SUSPENDED,
    TERMINATED,
    LicenseSpec,
)
from kameng.api.license import EXPIRED as EXPIRED_STATE
from kameng.api.resources import LICENSE, ROLEPOLICY
from kameng.api.rolepolicy import RolePolicySpec
from kameng.kube import events
from kameng.kube.client import Kube, KubeError, path_for
from kameng.licensing import notices
from kameng.licensing.lifecycle import LifeCycle, Terms, state_at, terminated_of, time_left
from kameng.licensing.term import format_time
from kameng.notify import Notice, Notifiers, NotifyError

from . import metrics

log = logging.getLogger(__name__)
_WARN_STATES = {GRACE, EXPIRED_STATE, SUSPENDED}
# Longest sleep of the clock: a bound on the damage of a wrong system clock.
MAX_CLOCK_SLEEP = 3600.0
# A RolePolicy's usage count changes with every SubSite that lands: written once the
# count has been quiet this long (or at the latest after USAGE_MAX_DELAY), so a batch of
# a thousand SubSites costs a handful of status writes, not a thousand.
USAGE_QUIET = 2.0
USAGE_MAX_DELAY = 10.0
# A notice that could not be delivered is tried again this much later.
NOTICE_RETRY = 30.0


def license_lifecycle(spec: dict[str, Any], now: datetime, holds: tuple[Hold, ...] = (),
                      terminated_at: datetime | None = None) -> LifeCycle:
    return state_at(Terms.from_spec(LicenseSpec.model_validate(spec), holds, terminated_at),
                    now)


def license_status(spec: dict[str, Any], generation: int, previous: dict[str, Any] | None,
                   now: datetime, holds: tuple[Hold, ...] = (),
                   terminated_at: datetime | None = None) -> dict[str, Any]:
    lc = license_lifecycle(spec, now, holds, terminated_at)
    out: dict[str, Any] = {
        "expiresAt": format_time(lc.terms.end), "graceUntil": format_time(lc.terms.grace_until),
        "expiresIn": time_left(lc.terms, now)[0],
        "observedGeneration": generation,
        "conditions": c.set_condition((previous or {}).get("conditions"), c.READY,
                                      lc.selling, lc.reason, lc.message, now, generation),
    }
    # Notices of the current term only: a renewal (a new term end) starts a new list.
    kept = notices.sent_for_term((previous or {}).get("noticesSent"), lc.terms)
    if kept or (previous or {}).get("noticesSent"):
        out["noticesSent"] = kept
    # The status shows a state once the term has begun (Pending is not in the enum).
    if lc.state != PENDING:
        out["state"] = lc.state
    return out


def rolepolicy_status(spec: dict[str, Any], generation: int, used_by: int,
                      previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    rp = RolePolicySpec.model_validate(spec)
    msg = f"{len(rp.roles)} roles, used by {used_by} sub-site(s)"
    return {"roleCount": len(rp.roles), "usedBy": used_by, "observedGeneration": generation,
            "conditions": c.set_condition((previous or {}).get("conditions"), c.READY, True,
                                          c.R_VALID, msg, now, generation)}


def first_state_quiet(current: dict[str, Any], new_state: str) -> bool:
    """A new License's first state, when it is Active, is not a transition: its status
    says it, and an Event per License was one write in twenty-six of a batch's (the rule
    of a new SubSite's first phase). A License that starts anywhere else (ExpiringSoon,
    Grace, Suspended…) still says so, and so does a Pending one (its status is written,
    without a state) that becomes Active when its term begins."""
    return not current and new_state == ACTIVE


def _leads(spec: dict[str, Any]) -> list[str]:
    """The notice lead times of a License spec (the CRD default when absent)."""
    n = spec.get("notices")
    if n is None or "before" not in n:
        return list(DEFAULT_NOTICE_LEADS)
    return list(n.get("before") or [])


def differs(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether a write is needed; only fields we own are compared."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items()) or \
        ("state" in current and "state" not in desired)


class Agreements:
    """Latest License and RolePolicy bodies seen, and the writes that keep status true."""

    def __init__(self, kube: Kube, notifiers: Notifiers | None = None) -> None:
        self.kube = kube
        self.notifiers = notifiers or Notifiers([])
        self.owners: dict[str, str] = {}  # SubSite name → owner's e-mail (notices)
        self._notice_retry: dict[str, datetime] = {}  # License → when to try again
        self._due: dict[str, datetime | None] = {}  # License → its next change (clock)
        # Licenses whose next change must be computed again (edited, synced, new).
        self._due_stale: set[str] = set()
        self.licenses: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.used_by: dict[str, int] = {}
        self.changed = asyncio.Event()  # wakes the clock: a License was added or edited
        self._usage_dirty: set[str] = set()  # policies whose usedBy waits to be written
        self._usage_kick = asyncio.Event()
        self._usage_task: asyncio.Task[None] | None = None

    async def license_seen(self, body: dict[str, Any], now: datetime | None = None) -> None:
        name = body["metadata"]["name"]
        self.licenses[name] = body
        self._due_stale.add(name)
        self.changed.set()
        await self._sync_license(body, now or datetime.now(UTC))

    def license_gone(self, name: str) -> None:
        self.licenses.pop(name, None)
        self._due.pop(name, None)
        self._notice_retry.pop(name, None)

    def site_seen(self, name: str, spec: dict[str, Any], deleted: bool = False) -> None:
        email = (spec.get("owner") or {}).get("email")
        if deleted or not email:
            self.owners.pop(name, None)
        else:
            self.owners[name] = email

    async def policy_seen(self, body: dict[str, Any], used_by: int) -> None:
        name = body["metadata"]["name"]
        self.policies[name] = body
        self.used_by[name] = used_by
        status = body.get("status") or {}
        if status.get("observedGeneration") != body["metadata"].get("generation", 1) or \
                "usedBy" not in status:
            await self._sync_policy(body, datetime.now(UTC))  # new or edited: at once
        elif status.get("usedBy") != used_by:
            self._usage_changed(name)

    def policy_gone(self, name: str) -> None:
        self.policies.pop(name, None)
        self.used_by.pop(name, None)
        self._usage_dirty.discard(name)

    async def policy_usage(self, counts: Iterable[tuple[str, int]]) -> None:
        for name, n in counts:
            if name in self.policies and self.used_by.get(name) != n:
                self.used_by[name] = n
                self._usage_changed(name)

    def _usage_changed(self, name: str) -> None:
        self._usage_dirty.add(name)
        self._usage_kick.set()
        if self._usage_task is None or self._usage_task.done():
            self._usage_task = asyncio.create_task(self._write_usage())

    async def _write_usage(self) -> None:
        """Write the usage counts once they have settled (see USAGE_QUIET)."""
        loop = asyncio.get_running_loop()
        while self._usage_dirty:
            first = loop.time()
            while loop.time() - first < USAGE_MAX_DELAY:
                self._usage_kick.clear()
                try:
                    await asyncio.wait_for(self._usage_kick.wait(), USAGE_QUIET)
                except TimeoutError:
                    break
            names, self._usage_dirty = self._usage_dirty, set()
            for name in sorted(names):
                body = self.policies.get(name)
                if body is not None:
                    await self._sync_policy(body, datetime.now(UTC))

    def close(self) -> None:
        if self._usage_task is not None:
            self._usage_task.cancel()

    def due_at(self, name: str, now: datetime) -> datetime | None:
        """When License ``name`` next changes by time alone: its state, the text of its
        time left, or a notice falling due (or being retried)."""
        body = self.licenses.get(name) or {}
        spec = body.get("spec") or {}
        try:
            lc = license_lifecycle(spec, now,
                                   terminated_at=terminated_of(body.get("metadata", {})
                                                               .get("annotations")))
        except ValueError:
            return None
        if lc.state == TERMINATED:
            return None  # terminal: nothing changes by time any more
        sent = (body.get("status") or {}).get("noticesSent")
        points = [self._notice_retry.get(name), lc.next_change, time_left(lc.terms, now)[1],
                  notices.next_due(lc.terms, _leads(spec), sent, now)]
        return min((p for p in points if p is not None), default=None)

    def next_change(self, now: datetime) -> datetime | None:
        """When the first known License changes by time alone. Remembers each License's
        own time, so the tick after the sleep knows which ones are due (recomputed then,
        the passed boundary would already be in the past and nothing would look due)."""
        # Computed again only for a License that changed, is new, or whose time has
        # passed: until its first boundary a License's next change is the same whatever
        # the time. Recomputing all of them on every License event (each status write
        # echoes one) was O(N²): 16 % of the operator's CPU in a 1,000-site batch.
        due = self._due
        for name in self.licenses:
            known = due.get(name, now)
            if name in self._due_stale or name not in due or (known is not None
                                                              and known <= now):
                due[name] = self.due_at(name, now)
        self._due_stale.clear()
        for name in [n for n in due if n not in self.licenses]:
            del due[name]
        return min((p for p in self._due.values() if p is not None), default=None)

    async def tick(self, now: datetime) -> None:
        """Time-driven changes (ExpiringSoon → Grace → Expired, time left, notices)
        without an edit, for the Licenses that are due only: a day step of one License
        costs one read and one write, not a read of every License.

        Each due License is read fresh first: while kopf pauses this operator in favour
        of a peer it gets no watch events, and the peer may have written the status."""
        for name in list(self.licenses):
            due = self._due.get(name)
            if due is None or due > now:
                continue
            try:
                fresh = await self.kube.get(path_for(API_VERSION, LICENSE.kind, name),
                                            kind=LICENSE.kind)
            except KubeError as e:
                log.warning("License %s: not read: %s", name, e)
                continue
            if fresh is None:
                self.licenses.pop(name, None)
                continue
            self.licenses[name] = fresh
            await self._sync_license(fresh, now)

    async def run_clock(self) -> None:
        """Sleep until the next License changes state (or one is edited), then tick."""
        while True:
            now = datetime.now(UTC)
            nxt = self.next_change(now)
            delay = MAX_CLOCK_SLEEP if nxt is None else \
                min(MAX_CLOCK_SLEEP, max(0.0, (nxt - now).total_seconds()) + 0.5)
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=delay)
                continue  # an edit: its status was synced already; recompute the time
            except TimeoutError:
                pass
            try:
                await self.tick(datetime.now(UTC))
            except Exception:  # the next tick retries; a bug must not stop the clock
                log.exception("status clock of Licenses failed")
                await asyncio.sleep(5)

    async def _sync_license(self, body: dict[str, Any], now: datetime) -> None:
        meta = body["metadata"]
        # Its status (notices sent) or a notice's retry time may change below.
        self._due_stale.add(meta["name"])
        try:
            desired = license_status(body.get("spec") or {}, int(meta.get("generation", 1)),
                                     body.get("status"), now,
                                     holds_of(meta.get("annotations")),
                                     terminated_of(meta.get("annotations")))
        except ValueError as e:  # the schema admits nothing this rejects; be safe anyway
            log.warning("License %s: cannot evaluate: %s", meta["name"], e)
            return
        current = body.get("status") or {}
        await self._notify(body, desired, now)
        if not differs(current, desired):
            return
        patch = {"status": {**desired, **({} if "state" in desired else {"state": None})}}
        try:
            new = await self.kube.merge_patch(
                path_for(API_VERSION, LICENSE.kind, meta["name"], subresource="status"),
                patch, kind=LICENSE.kind)
        except KubeError as e:
            log.warning("License %s: status not written: %s", meta["name"], e)
            return
        self.licenses[meta["name"]] = new
        old_state, new_state = current.get("state"), desired.get("state")
        if new_state and new_state != old_state:
            # Counted where the Event is posted: once per transition, by the one
            # operator that wrote it, not per reconcile.
            metrics.LICENSE_TRANSITIONS.labels(state=new_state).inc()
            if first_state_quiet(current, new_state):
                return
            ready = c.find(desired["conditions"], c.READY) or {}
            await events.post(self.kube,
                              {**body, "kind": LICENSE.kind, "apiVersion": API_VERSION},
                              "Warning" if new_state in _WARN_STATES else "Normal",
                              f"License{new_state}", ready.get("message", ""))

    async def _notify(self, body: dict[str, Any], desired: dict[str, Any],
                      now: datetime) -> None:
        """Send the expiry notice due now, if any, and record it in ``desired`` (the
        status about to be written). Sent first, recorded after: a crash in between
        sends again (receivers drop it by its id), never loses one."""
        meta, spec = body["metadata"], body.get("spec") or {}
        name = meta["name"]
        retry = self._notice_retry.get(name)
        if retry is not None and now < retry:
            return
        lc = license_lifecycle(spec, now, holds_of(meta.get("annotations")),
                               terminated_of(meta.get("annotations")))
        if lc.state == TERMINATED:  # no expiry notice for a site that is gone
            self._notice_retry.pop(name, None)
            return
        sent = desired.get("noticesSent", [])
        due = notices.due(lc.terms, _leads(spec), sent, now)
        if due is None:
            self._notice_retry.pop(name, None)
            return
        left = time_left(lc.terms, now)[0]
        end = format_time(lc.terms.end)
        owner = self.owners.get(lc.terms.site)
        extra = list((spec.get("notices") or {}).get("recipients") or [])
        notice = Notice(
            id=f"{meta.get('uid', name)}-{int(lc.terms.end.timestamp())}-{due.before}",
            license=name, site=lc.terms.site, state=lc.state, before=due.before,
            term_end=end, grace_until=format_time(lc.terms.grace_until), left=left,
            message=(f"The license of {lc.terms.site} ends {end} (in {left}); renew with "
                     f"`kubectl kameng renew {name}` or from HQ's back office."),
            recipients=tuple(sorted({*extra, *([owner] if owner else [])})))
        try:
            await self.notifiers.send(notice)
        except NotifyError:
            self._notice_retry[name] = now + timedelta(seconds=NOTICE_RETRY)
            metrics.LICENSE_NOTICES.labels(result="failed").inc()
            return
        self._notice_retry.pop(name, None)
        metrics.LICENSE_NOTICES.labels(result="sent").inc()
        desired["noticesSent"] = [*sent, *notices.records(due.passed, lc.terms, now)]
        await events.post(self.kube, {**body, "kind": LICENSE.kind, "apiVersion": API_VERSION},
                          "Normal", "LicenseExpiryNotice",
                          f"notice {due.before} before the end of term sent: {notice.message}")

    async def _sync_policy(self, body: dict[str, Any], now: datetime) -> None:
        meta = body["metadata"]
        name = meta["name"]
        desired = rolepolicy_status(body.get("spec") or {}, int(meta.get("generation", 1)),
                                    self.used_by.get(name, 0), body.get("status"), now)
        if not differs(body.get("status"), desired):
            return
        try:
            new = await self.kube.merge_patch(
                path_for(API_VERSION, ROLEPOLICY.kind, name, subresource="status"),
                {"status": desired}, kind=ROLEPOLICY.kind)
        except KubeError as e:
            log.warning("RolePolicy %s: status not written: %s", name, e)
            return
        self.policies[name] = new
