"""The committed CRDs are exactly what the models generate, and structurally sound."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kameng.api.common import GROUP
from kameng.api.crdgen import crd, render
from kameng.api.permissions import PERMISSIONS, STANDARD_ROLES
from kameng.api.resources import KINDS
from kameng.api.rolepolicy import RolePolicySpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("out", ["crds", "charts/kameng/crds"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_committed_crd_is_byte_identical_to_generated(kind, out):
    committed = (ROOT / out / f"{GROUP}_{kind.plural}.yaml").read_text("utf-8")
    assert committed == render(kind), f"{out}/ is stale: run `make crds` and commit"


def _walk(schema, path="$"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_bounded(kind):
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for keyword in ("$ref", "anyOf", "title"):
            assert keyword not in node, f"{path} keeps JSON-Schema-only {keyword}"
        assert "type" in node, f"{path} has no type (not structural)"
        # CEL cost estimation needs bounds on everything a rule can read.
        if node["type"] == "string" and path.startswith("$.spec"):
            bounded = "maxLength" in node or "enum" in node or node.get("format") == "date-time"
            assert bounded, f"{path} has no maxLength"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} has no maxItems"


def test_printer_columns_and_names():
    by_kind = {k.kind: crd(k)["spec"] for k in KINDS}
    assert by_kind["SubSite"]["names"]["shortNames"] == ["ss"]
    assert by_kind["License"]["names"]["shortNames"] == ["lic"]
    assert by_kind["RolePolicy"]["names"]["shortNames"] == ["rp"]
    for spec in by_kind.values():
        assert spec["scope"] == "Cluster"
        assert spec["names"]["categories"] == ["kameng"]
        assert spec["versions"][0]["subresources"] == {"status": {}}
        cols = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
        assert cols[-1] == "Age"
    ss_cols = [c["name"] for c in by_kind["SubSite"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Phase", "Ready", "Expires", "URL"} <= set(ss_cols)
    lic_cols = [c["name"] for c in by_kind["License"]["versions"][0]["additionalPrinterColumns"]]
    assert {"State", "Expires"} <= set(lic_cols)


def test_every_pattern_rule_has_a_human_message():
    for kind in KINDS:
        schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            # A bare pattern answers with the regex; we want the rule's message instead.
            assert "pattern" not in node, f"{path} uses a bare pattern"
            for r in node.get("x-kubernetes-validations", []):
                assert len(r["message"]) > 15, (path, r)
                assert "self" not in r["message"], (path, r)


def test_sample_standard_policy_matches_the_code():
    doc = yaml.safe_load((ROOT / "manifests/samples/rolepolicy-standard.yaml").read_text())
    spec = RolePolicySpec.model_validate(doc["spec"])
    assert {r.name: set(r.permissions) for r in spec.roles} == {
        k: set(v) for k, v in STANDARD_ROLES.items()}
    assert all(p in PERMISSIONS for r in spec.roles for p in r.permissions)


def test_chart_carries_the_same_peering_crd() -> None:
    """kopf's ClusterKopfPeering CRD is not generated: the chart's copy must not drift."""
    name = "kopf.dev_clusterkopfpeerings.yaml"
    assert (ROOT / "charts/kameng/crds" / name).read_text() == (ROOT / "crds" / name).read_text()
