"""Status of Licenses and RolePolicies: what `kubectl get lic,rp` shows at a glance.

The states are computed from the spec and the clock alone (pure functions below), so
the status is level-based: a watch event recomputes it, a periodic sweep catches the
transitions that only time causes, and the API is written only when the result differs
from what the object already says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from kameng.api.common import API_VERSION
from kameng.api.license import LicenseSpec
from kameng.api.rolepolicy import RolePolicySpec
from kameng.licensing.term import format_time, parse_duration, parse_time

from . import events
from .kube import Kube, KubeError, path_for

log = logging.getLogger(__name__)
EXPIRING_SOON = timedelta(days=30)
SWEEP_SECONDS = 60.0
_WARN_STATES = {"Grace", "Expired", "Suspended"}


def _ready(ok: bool, reason: str, message: str, generation: int,
           previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    old = next((c for c in (previous or {}).get("conditions", []) if c.get("type") == "Ready"),
               None)
    status = "True" if ok else "False"
    since = old["lastTransitionTime"] if old and old.get("status") == status and \
        old.get("lastTransitionTime") else format_time(now)
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}


def license_status(spec: dict[str, Any], generation: int, previous: dict[str, Any] | None,
                   now: datetime) -> dict[str, Any]:
    lic = LicenseSpec.model_validate(spec)
    start, end = parse_time(lic.term.start), parse_time(lic.term.end)
    grace_until = end + parse_duration(lic.grace_period)
    state: str | None
    if lic.suspended:
        why = f": {lic.suspend_reason}" if lic.suspend_reason else ""
        state, ok, reason, msg = "Suspended", False, "Suspended", f"suspended by HQ{why}"
    elif now < start:
        state, ok, reason, msg = None, False, "NotYetValid", f"term starts {format_time(start)}"
    elif now < end - EXPIRING_SOON:
        state, ok, reason, msg = "Active", True, "Active", f"valid until {format_time(end)}"
    elif now < end:
        state, ok, reason, msg = ("ExpiringSoon", True, "ExpiringSoon",
                                  f"term ends {format_time(end)}; renew with "
                                  f"`kubectl kameng renew {lic.sub_site} --extend 365d`")
    elif now < grace_until:
        state, ok, reason, msg = ("Grace", False, "InGrace",
                                  f"term ended {format_time(end)}; storefront read-only until "
                                  f"{format_time(grace_until)}")
    else:
        state, ok, reason, msg = ("Expired", False, "Expired",
                                  f"grace ended {format_time(grace_until)}; storefront "
                                  f"suspended")
    out: dict[str, Any] = {
        "expiresAt": format_time(end), "graceUntil": format_time(grace_until),
        "observedGeneration": generation,
        "conditions": [_ready(ok, reason, msg, generation, previous, now)],
    }
    if state:
        out["state"] = state
    return out


def license_next_change(spec: dict[str, Any], now: datetime) -> datetime | None:
    lic = LicenseSpec.model_validate(spec)
    end = parse_time(lic.term.end)
    points = (parse_time(lic.term.start), end - EXPIRING_SOON, end,
              end + parse_duration(lic.grace_period))
    future = [p for p in points if p > now]
    return min(future) if future else None


def rolepolicy_status(spec: dict[str, Any], generation: int, used_by: int,
                      previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    rp = RolePolicySpec.model_validate(spec)
    msg = f"{len(rp.roles)} roles, used by {used_by} sub-site(s)"
    return {"roleCount": len(rp.roles), "usedBy": used_by, "observedGeneration": generation,
            "conditions": [_ready(True, "Valid", msg, generation, previous, now)]}


def differs(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether a write is needed; only fields we own are compared."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items()) or \
        ("state" in current and "state" not in desired)


class Agreements:
    """Latest License and RolePolicy bodies seen, and the writes that keep status true."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.licenses: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.used_by: dict[str, int] = {}

    async def license_seen(self, body: dict[str, Any], now: datetime | None = None) -> None:
        name = body["metadata"]["name"]
        self.licenses[name] = body
        await self._sync_license(body, now or datetime.now(UTC))

    def license_gone(self, name: str) -> None:
        self.licenses.pop(name, None)

    async def policy_seen(self, body: dict[str, Any], used_by: int) -> None:
        name = body["metadata"]["name"]
        self.policies[name] = body
        self.used_by[name] = used_by
        await self._sync_policy(body, datetime.now(UTC))

    def policy_gone(self, name: str) -> None:
        self.policies.pop(name, None)
        self.used_by.pop(name, None)

    async def policy_usage(self, counts: Iterable[tuple[str, int]]) -> None:
        for name, n in counts:
            body = self.policies.get(name)
            if body is not None and self.used_by.get(name) != n:
                self.used_by[name] = n
                await self._sync_policy(body, datetime.now(UTC))

    async def sweep(self, now: datetime | None = None) -> None:
        """Time-driven transitions (ExpiringSoon → Grace → Expired) without an edit."""
        for body in list(self.licenses.values()):
            await self._sync_license(body, now or datetime.now(UTC))

    async def run_sweeps(self, usage: Any) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
                await self.policy_usage(usage())
            except Exception:  # the next sweep retries; a bug must not end sweeping
                log.exception("status sweep of Licenses/RolePolicies failed")

    async def _sync_license(self, body: dict[str, Any], now: datetime) -> None:
        meta = body["metadata"]
        try:
            desired = license_status(body.get("spec") or {}, int(meta.get("generation", 1)),
                                     body.get("status"), now)
        except ValueError as e:  # the schema admits nothing this rejects; be safe anyway
            log.warning("License %s: cannot evaluate: %s", meta["name"], e)
            return
        current = body.get("status") or {}
        if not differs(current, desired):
            return
        patch = {"status": {**desired, **({} if "state" in desired else {"state": None})}}
        try:
            new = await self.kube.merge_patch(
                path_for(API_VERSION, "License", meta["name"], subresource="status"), patch,
                kind="License")
        except KubeError as e:
            log.warning("License %s: status not written: %s", meta["name"], e)
            return
        self.licenses[meta["name"]] = new
        old_state, new_state = current.get("state"), desired.get("state")
        if new_state and new_state != old_state:
            msg = desired["conditions"][0]["message"]
            await events.post(self.kube, {**body, "kind": "License", "apiVersion": API_VERSION},
                              "Warning" if new_state in _WARN_STATES else "Normal",
                              f"License{new_state}", msg)

    async def _sync_policy(self, body: dict[str, Any], now: datetime) -> None:
        meta = body["metadata"]
        name = meta["name"]
        desired = rolepolicy_status(body.get("spec") or {}, int(meta.get("generation", 1)),
                                    self.used_by.get(name, 0), body.get("status"), now)
        if not differs(body.get("status"), desired):
            return
        try:
            new = await self.kube.merge_patch(
                path_for(API_VERSION, "RolePolicy", name, subresource="status"),
                {"status": desired}, kind="RolePolicy")
        except KubeError as e:
            log.warning("RolePolicy %s: status not written: %s", name, e)
            return
        self.policies[name] = new
