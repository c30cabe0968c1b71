"""Decide whether a child must be (re-)applied — without asking the server.

Two checks, both needed:
* the hash of the desired manifest, stored on the child, changes whenever the desired
  state changes — including a field that was *removed* from it;
* every field of the desired manifest must be present with the same value in the live
  object, which catches a person's edit of a managed field.
Fields the server adds (defaults, status, other managers' fields) are ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from kameng.api.kinds import APPLIED_HASH_ANNOTATION

# Keys whose string leaves are resource quantities the server may normalise
# ("0.5" → "500m"); comparing them as numbers avoids re-applying forever.
_QUANTITY_PARENTS = frozenset({"requests", "limits", "hard", "default", "defaultRequest",
                               "max", "min"})


def manifest_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    md = out["metadata"]
    md["annotations"] = {**md.get("annotations", {}), APPLIED_HASH_ANNOTATION: manifest_hash(obj)}
    return out


def _same_quantity(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return bool(parse_quantity(a) == parse_quantity(b))
    except (ValueError, TypeError):
        return False


def is_subset(desired: Any, live: Any, parent: str = "") -> bool:
    """Every field of ``desired`` is in ``live`` with the same value. ``parent`` is the
    key of the dict being compared, so the values of resource maps compare as
    quantities."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        quantities = parent in _QUANTITY_PARENTS
        return all(
            k in live and (
                _same_quantity(v, live[k]) if quantities and isinstance(v, str)
                and isinstance(live[k], str) else is_subset(v, live[k], k))
            for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(desired) == len(live)
                and all(is_subset(d, x, parent) for d, x in zip(desired, live, strict=True)))
    return bool(desired == live)


def needs_apply(desired_hashed: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """``desired_hashed`` is the output of :func:`with_hash`."""
    if live is None:
        return True
    if live.get("metadata", {}).get("deletionTimestamp"):
        return False  # going away; re-created once gone
    return not (is_subset(desired_hashed["metadata"], live.get("metadata", {}))
                and is_subset({k: v for k, v in desired_hashed.items() if k != "metadata"},
                              live))
