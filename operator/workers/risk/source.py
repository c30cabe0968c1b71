"""Where the risk worker's policies and licences come from: the Kubernetes API.

The worker is the one writer of ``RiskPolicy`` status (it is the one that compiles the
rules): ``RulesCompiled`` names every rule that does not compile with its error. Status is
written only when it differs from what is there, and by one replica at a time is not
needed: every replica computes the same status from the same spec, so concurrent writes
are identical and the "no write when nothing changed" check stops the second one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kameng.api.common import API_VERSION, format_time
from kameng.api.resources import LICENSE, RISKPOLICY
from kameng.api.riskpolicy import REASON_ALL_COMPILED, REASON_RULE_ERROR, RULES_COMPILED
from kameng.kube.client import Kube, KubeError, path_for
from kameng.licensing.lifecycle import Terms

from .policy import CompiledPolicy, compile_policy
from .worker import Policies

log = logging.getLogger(__name__)


def status_of(policy: CompiledPolicy, old: dict[str, Any] | None) -> dict[str, Any]:
    """The RiskPolicy status for a compiled policy (pure; keeps the transition time of an
    unchanged condition)."""
    if policy.errors:
        cond_status, reason = "False", REASON_RULE_ERROR
        message = "; ".join(f"rule {e.rule!r} does not compile: {e.error}"
                            for e in policy.errors)
        kept = [r.name for r in policy.rules if r.name in {e.rule for e in policy.errors}]
        if kept:
            message += f" (the last valid version keeps running: {', '.join(kept)})"
    else:
        cond_status, reason, message = "True", REASON_ALL_COMPILED, "every rule compiles"
    prev = next((c for c in (old or {}).get("conditions", [])
                 if c.get("type") == RULES_COMPILED), None)
    ltt = prev.get("lastTransitionTime") if prev and prev.get("status") == cond_status \
        else None
    return {
        "ruleCount": policy.rule_count,
        "activeRules": len(policy.rules),
        "observedGeneration": policy.generation,
        "conditions": [{
            "type": RULES_COMPILED, "status": cond_status, "reason": reason,
            "message": message[:2048],
            "lastTransitionTime": ltt or format_time(datetime.now(UTC)),
            "observedGeneration": policy.generation,
        }],
    }


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and {k: a.get(k) for k in b} == b


class KubeSource:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.compiled: dict[str, CompiledPolicy] = {}

    async def refresh(self, into: Policies) -> None:
        objs = await self.kube.list(path_for(API_VERSION, RISKPOLICY.kind))
        compiled: dict[str, CompiledPolicy] = {}
        for obj in objs:
            md = obj["metadata"]
            name = md["name"]
            prev = self.compiled.get(name)
            gen = int(md.get("generation", 0))
            if prev is not None and prev.generation == gen:
                compiled[name] = prev
                continue
            try:
                cp = compile_policy(name, obj.get("spec") or {}, gen, prev)
            except Exception as exc:  # a spec the API server let through but we cannot use
                log.error("risk policy unusable; keeping the last version",
                          extra={"policy": name, "error": type(exc).__name__})
                if prev is not None:
                    compiled[name] = prev
                continue
            compiled[name] = cp
            await self._write_status(obj, cp)
        self.compiled = compiled
        into.policies = sorted(compiled.values(), key=lambda p: p.name)
        await self.refresh_licences(into)

    async def refresh_licences(self, into: Policies) -> None:
        licences: dict[str, dict[str, Any]] = {}
        for lic in await self.kube.list(path_for(API_VERSION, LICENSE.kind)):
            spec = lic.get("spec") or {}
            site = spec.get("subSite")
            if site:
                licences[site] = {"name": lic["metadata"]["name"],
                                  "categories": spec.get("categories") or [],
                                  "regions": spec.get("regions") or [],
                                  "annotations": lic["metadata"].get("annotations") or {},
                                  "object": lic, "terms": _terms(lic)}
        into.licences = licences

    async def _write_status(self, obj: dict[str, Any], cp: CompiledPolicy) -> None:
        desired = status_of(cp, obj.get("status"))
        if _same(obj.get("status"), desired):
            return
        try:
            await self.kube.merge_patch(
                path_for(API_VERSION, RISKPOLICY.kind, obj["metadata"]["name"],
                         subresource="status"), {"status": desired}, kind=RISKPOLICY.kind)
        except KubeError as exc:
            log.warning("could not write RiskPolicy status: %s", exc)


def _terms(lic: dict[str, Any]) -> Terms | None:
    """The License's life-cycle facts, parsed once per refresh (not per event)."""
    try:
        return Terms.from_object(lic)
    except ValueError:
        return None
