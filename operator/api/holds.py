"""Holds: automatic or manual stops recorded beside the spec that Git owns.

A hold is an annotation on the License, ``hold.kameng.io/<kind>``, whose value is a small
JSON object (reason, since, by). Annotations that are not in the Git manifest are not
drift for Argo CD or Flux, so a worker can suspend a site or hold its payouts without
rewriting a spec; a person lifts it (``kubectl kameng release <site> [--kind K]``), which
removes the annotation. The effective license state is ``spec.suspended`` OR a hold that
suspends OR the term's life cycle (:func:`kameng.licensing.lifecycle.state_at`).

Kinds:

* ``risk`` — the risk worker's site escalation: the site is suspended and its payouts held.
* ``payout`` — HQ holds the partner's payouts only; the shop keeps selling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

HOLD_PREFIX = "hold.kameng.io/"
HoldKind = Literal["risk", "payout"]
HOLD_KINDS: tuple[str, ...] = HoldKind.__args__  # type: ignore[attr-defined]
# Kinds that suspend the site (and with it, its payouts); the others hold payouts only.
SUSPENDING_KINDS = frozenset({"risk"})


@dataclass(frozen=True)
class Hold:
    kind: str
    reason: str = ""
    since: str = ""  # RFC 3339
    by: str = ""  # who or what placed it: "risk-worker", a person's name

    @property
    def suspends(self) -> bool:
        return self.kind in SUSPENDING_KINDS

    @property
    def annotation(self) -> str:
        return HOLD_PREFIX + self.kind

    def to_value(self) -> str:
        return json.dumps({"reason": self.reason, "since": self.since, "by": self.by},
                          separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def holds_of(annotations: Mapping[str, str] | None) -> tuple[Hold, ...]:
    """Every hold recorded on an object, sorted by kind. A value that is not the JSON
    this module writes still counts as a hold (a person's hand-written annotation must
    never be ignored), with the raw text as its reason."""
    out = []
    for key, value in (annotations or {}).items():
        if not key.startswith(HOLD_PREFIX) or key == HOLD_PREFIX:
            continue
        kind = key[len(HOLD_PREFIX):]
        try:
            data = json.loads(value)
            if not isinstance(data, dict):
                raise ValueError
            out.append(Hold(kind, str(data.get("reason", "")), str(data.get("since", "")),
                            str(data.get("by", ""))))
        except ValueError:
            out.append(Hold(kind, reason=str(value)[:200]))
    return tuple(sorted(out, key=lambda h: h.kind))
