"""The Licenses the worker needs: rates in force and whether payouts are held.

Read from the Kubernetes API (list, cached for ``ttl`` seconds; the chart grants
get/list/watch on licenses only). A site without a License is unknown: its events are
not posted (they stay pending and are retried) and its payouts wait.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kameng.api.common import API_VERSION
from kameng.api.holds import holds_of
from kameng.api.license import LicenseSpec
from kameng.ledger.rules import Rates
from kameng.licensing.lifecycle import Terms, state_at, terminated_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LicenseView:
    rates: Rates
    terms: Terms
    uid: str = ""  # the License's uid: its term is accounted per uid (re-created = new)
    plan: str = ""

    def payouts_held(self, now: datetime | None = None) -> bool:
        return state_at(self.terms, now or datetime.now(UTC)).payouts_held


def view_of(obj: dict[str, Any]) -> LicenseView:
    """One License object (as the API returns it) → what settlement needs of it."""
    md = obj.get("metadata", {})
    spec = LicenseSpec.model_validate(obj["spec"])
    rates = Rates.from_fees(spec.fees, license=md.get("name", ""),
                            generation=int(md.get("generation", 0)))
    ann = md.get("annotations")
    return LicenseView(rates=rates,
                       terms=Terms.from_spec(spec, holds_of(ann), terminated_of(ann)),
                       uid=str(md.get("uid", "")), plan=str(spec.plan))


class LicenseBook:
    def __init__(self, kube: Any | None = None, ttl: float = 5.0) -> None:
        self.kube = kube
        self.ttl = ttl
        self._by_site: dict[str, LicenseView] = {}
        self._at = 0.0

    def set(self, objects: list[dict[str, Any]]) -> None:
        by_site: dict[str, LicenseView] = {}
        for obj in objects:
            try:
                v = view_of(obj)
            except Exception as exc:  # one malformed License must not stop the others
                log.warning("license skipped", extra={
                    "license": obj.get("metadata", {}).get("name"), "error": type(exc).__name__})
                continue
            by_site[v.terms.site] = v
        self._by_site = by_site
        self._at = time.monotonic()

    async def refresh(self, force: bool = False) -> None:
        if self.kube is None or (not force and time.monotonic() - self._at < self.ttl):
            return
        from kameng.kube.client import path_for
        try:
            self.set(await self.kube.list(path_for(API_VERSION, "License")))
        except Exception as exc:
            # The API server away for a while must not turn good events into dead
            # letters: keep what was read last (Licenses change rarely) and try again.
            self._at = time.monotonic()
            log.warning("licenses could not be listed; using the last copy",
                        extra={"error": type(exc).__name__, "known": len(self._by_site)})

    def views(self) -> list[LicenseView]:
        return list(self._by_site.values())

    def get(self, site: str) -> LicenseView | None:
        return self._by_site.get(site)

    def rates(self, site: str) -> Rates | None:
        v = self._by_site.get(site)
        return v.rates if v else None

    def held(self, site: str) -> bool | None:
        v = self._by_site.get(site)
        return v.payouts_held() if v else None
