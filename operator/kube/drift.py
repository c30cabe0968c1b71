"""Decide whether a child must be (re-)applied — without asking the server.

Two checks, both needed:
* the hash of the desired manifest, stored on the child, changes whenever the desired
  state changes — including a field that was *removed* from it;
* every field of the desired manifest must be present with the same value in the live
  object, which catches a person's edit of a managed field.
Fields the server adds (defaults, status, other managers' fields) are ignored.
"""

from __future__ import annotations

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
    """``obj`` with the hash annotation. A new top level and metadata, sharing the rest:
    nothing downstream mutates a manifest, and a deep copy of every child of every
    reconcile was a measurable share of the operator's CPU at 1,000 sites."""
    md = obj["metadata"]
    return {**obj, "metadata": {**md, "annotations": {
        **md.get("annotations", {}), APPLIED_HASH_ANNOTATION: manifest_hash(obj)}}}


def _omitted(value: Any) -> bool:
    """Values the API server leaves out of what it returns (``omitempty``): absent in
    the live object is the same as set to one of these."""
    return value is None or (isinstance(value, str | list | dict) and not value)


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
            (_omitted(v) if k not in live else
             _same_quantity(v, live[k]) if quantities and isinstance(v, str)
             and isinstance(live[k], str) else is_subset(v, live[k], k))
            for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(desired) == len(live)
                and all(is_subset(d, x, parent) for d, x in zip(desired, live, strict=True)))
    return bool(desired == live)


def first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """The path of the first field of ``desired`` that ``live`` lacks or differs in (for
    the debug log that says why a child is applied again); None when it is a subset."""
    if isinstance(desired, dict) and isinstance(live, dict):
        for k, v in desired.items():
            if k not in live:
                if _omitted(v):
                    continue
                return f"{path}.{k} (missing)"
            if not is_subset(v, live[k], k):
                return first_difference(v, live[k], f"{path}.{k}") or f"{path}.{k}"
        return None
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        for i, (d, x) in enumerate(zip(desired, live, strict=True)):
            if not is_subset(d, x, path.rsplit(".", 1)[-1]):
                return first_difference(d, x, f"{path}[{i}]") or f"{path}[{i}]"
        return None
    return None if desired == live else path or "."


def needs_apply(desired_hashed: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """``desired_hashed`` is the output of :func:`with_hash`."""
    if live is None:
        return True
    if live.get("metadata", {}).get("deletionTimestamp"):
        return False  # going away; re-created once gone
    return not (is_subset(desired_hashed["metadata"], live.get("metadata", {}))
                and is_subset({k: v for k, v in desired_hashed.items() if k != "metadata"},
                              live))


# Pod-spec and container fields the API server fills in by itself: their presence in
# the live object is not someone's addition.
_POD_DEFAULTS = frozenset({"restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy",
                           "schedulerName", "serviceAccount"})
_CONTAINER_DEFAULTS = frozenset({"terminationMessagePath", "terminationMessagePolicy",
                                 "imagePullPolicy"})
# Lists whose entries are named: an entry the desired state lacks is a foreign addition.
_NAMED_LISTS = ("env", "envFrom", "volumeMounts", "ports", "volumeDevices")


def _names(items: Any, key: str = "name") -> list[str]:
    out = []
    for item in items or []:
        if isinstance(item, dict):
            out.append(str(item.get(key) or item.get("mountPath")
                           or json.dumps(item, sort_keys=True)))
    return out


def _foreign_in_container(where: str, desired: dict[str, Any], live: dict[str, Any]
                          ) -> list[str]:
    out = [f"{where}.{k}" for k in live
           if k not in desired and k not in _CONTAINER_DEFAULTS]
    for lst in _NAMED_LISTS:
        wanted = _names(desired.get(lst))
        out += [f"{where}.{lst}[{n}]" for n in _names(live.get(lst)) if n not in wanted]
    return out


def foreign_fields(desired: dict[str, Any], live: dict[str, Any] | None) -> list[str]:
    """What someone else added to the pod template of an object we own (containers,
    init containers, volumes, env, envFrom, volume mounts, service account, any pod-spec
    field): server-side apply keeps other managers' fields, so these are found by
    comparing the live template with the desired one. Empty for objects without a pod
    template, and for fields the server defaults."""
    want = ((desired.get("spec") or {}).get("template") or {}).get("spec")
    have = (((live or {}).get("spec") or {}).get("template") or {}).get("spec")
    if not isinstance(want, dict) or not isinstance(have, dict):
        return []
    if (live or {}).get("metadata", {}).get("deletionTimestamp"):
        return []
    out = [f"spec.{k}" for k in have if k not in want and k not in _POD_DEFAULTS]
    if "serviceAccount" in have and have["serviceAccount"] != want.get("serviceAccountName"):
        out.append("spec.serviceAccount")
    for lst in ("containers", "initContainers", "ephemeralContainers", "volumes"):
        wanted = _names(want.get(lst))
        out += [f"spec.{lst}[{n}]" for n in _names(have.get(lst)) if n not in wanted]
    by_name = {c.get("name"): c for c in want.get("containers") or []}
    for c in have.get("containers") or []:
        if c.get("name") in by_name:
            out += _foreign_in_container(f"containers[{c.get('name')}]",
                                         by_name[c["name"]], c)
    wanted_vols = {v.get("name"): v for v in want.get("volumes") or []}
    for v in have.get("volumes") or []:
        w = wanted_vols.get(v.get("name"))
        if w is not None and set(v) - set(w):
            out.append(f"spec.volumes[{v.get('name')}] source")
    return out
