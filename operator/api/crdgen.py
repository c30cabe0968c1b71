"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema (``$ref``, ``anyOf`` with ``null``, titles); the API server
wants a structural OpenAPI v3 schema. This module is the only translation between the
two, so ``crds/`` is always what the models say.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .common import GROUP, VERSION
from .resources import KINDS, Kind

# Keywords a structural schema may carry; everything else pydantic emits is dropped.
# Listed in the order they are written, so the YAML reads type-first.
_KEEP = (
    "type", "description", "format", "enum", "default", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
    "maxItems", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "required",
    "properties", "items", "additionalProperties", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    # Optional[X] is anyOf [X, null]: the field is simply optional on the wire.
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unions are not structural: {variants}")
        outer = {k: v for k, v in node.items() if k not in ("default",) or v is not None}
        node = {**variants[0], **outer}
        # Validation on the inner type and on the field both apply.
        rules = variants[0].get("x-kubernetes-validations", []) + outer.get(
            "x-kubernetes-validations", [])
        if rules:
            node["x-kubernetes-validations"] = _dedupe(rules)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None:
        del node["default"]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    out: dict[str, Any] = {}
    for key in _KEEP:
        if key not in node:
            continue
        value = node[key]
        if key == "properties":
            out[key] = {k: _structural(v) for k, v in value.items()}
        elif key == "additionalProperties" and value is False:
            # extra="forbid" in Python; the API server prunes or (kubectl's default
            # strict field validation) rejects unknown fields, and forbids `false` here.
            continue
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value)
        else:
            out[key] = value
    # A pattern beside a CEL rule with the same regex would answer first with the
    # unreadable "should match '^…'", hiding the rule's message.
    if "pattern" in out and any("matches(" in r["rule"] for r in
                                out.get("x-kubernetes-validations", [])):
        del out["pattern"]
    return out


def _dedupe(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in rules:
        key = (r["rule"], r["message"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def model_schema(model: Any) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def _conditions_status(schema: dict[str, Any]) -> dict[str, Any]:
    # Conditions are written by the operator only; requiring the metav1.Condition
    # fields keeps a broken writer from persisting half a condition.
    cond = schema["properties"].get("conditions")
    if cond:
        cond["items"]["required"] = ["type", "status"]
    return schema


def crd(kind: Kind) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec)
    status_schema = _conditions_status(model_schema(kind.status))
    status_schema.pop("required", None)
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if kind.root_rules:
        root["x-kubernetes-validations"] = list(kind.root_rules)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "kameng",
                       "app.kubernetes.io/part-of": "kameng"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["kameng"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": list(kind.columns),
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)

HEADER = "# Generated by `kameng crds` from operator/api/. Do not edit by hand.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.dump(crd(kind), Dumper=_Dumper, sort_keys=False, width=100,
                              allow_unicode=True)


def write_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = out_dir / f"{GROUP}_{kind.plural}.yaml"
        path.write_text(render(kind), encoding="utf-8")
        written.append(path)
    return written
