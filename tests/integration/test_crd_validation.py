"""The real API server rejects invalid SubSite/License/RolePolicy objects with messages
that name the field and the rule (CEL and schema), and accepts the samples."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"


def _load(name: str) -> dict:
    return yaml.safe_load((SAMPLES / name).read_text())


def _with(doc: dict, path: str, value: object, *, name: str | None = None) -> dict:
    """Copy of `doc` with the dotted `path` set (None deletes the key)."""
    out = copy.deepcopy(doc)
    if name:
        out["metadata"]["name"] = name
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return out


LIC = _load("license-demo.yaml")
SS = _load("subsite-demo.yaml")
RP = _load("rolepolicy-standard.yaml")

# (id, object, substrings that must all appear in the API server's answer)
INVALID = [
    ("license-term-end-before-start",
     _with(LIC, "spec.term", {"start": "2027-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
     ["spec.term", "term.end must be after term.start"]),
    ("license-plan-unknown", _with(LIC, "spec.plan", "gold"),
     ["spec.plan", 'Unsupported value: "gold"', '"basic"', '"flagship"']),
    ("license-percent-over-100",
     _with(LIC, "spec.fees.revenueShare", [{"category": "game-cards", "percent": "120"}]),
     ["spec.fees.revenueShare[0].percent", "between \"0\" and \"100\""]),
    ("license-money-not-decimal-string", _with(LIC, "spec.fees.baseAnnualFee", "12,000"),
     ["spec.fees.baseAnnualFee", "decimal string with at most 2 decimals"]),
    ("license-money-as-float", _with(LIC, "spec.fees.baseAnnualFee", 12000.5),
     ["spec.fees.baseAnnualFee", "must be of type string"]),
    ("license-region-not-iso", _with(LIC, "spec.regions", ["cn-31"]),
     ["spec.regions[0]", "ISO 3166-2"]),
    ("license-share-category-not-licensed",
     _with(LIC, "spec.fees.revenueShare", [{"category": "gift-cards", "percent": "5"}]),
     ["spec.fees.revenueShare", "must be one of the licensed categories"]),
    ("license-grace-not-duration", _with(LIC, "spec.gracePeriod", "3 days"),
     ["spec.gracePeriod", "such as 72h"]),
    ("license-subsite-not-dns", _with(LIC, "spec.subSite", "Demo_Shop"),
     ["spec.subSite", "lowercase letters, digits and '-'"]),
    ("license-no-categories", _with(LIC, "spec.categories", []),
     ["spec.categories", "should have at least 1 items"]),
    ("subsite-domain-invalid", _with(SS, "spec.domain", "Shop_Example"),
     ["spec.domain", "domain must be a lowercase DNS name"]),
    ("subsite-tls-both", _with(SS, "spec.tls", {"secretName": "a", "clusterIssuer": "b"}),
     ["spec.tls", "exactly one of secretName"]),
    ("subsite-tls-none", _with(SS, "spec.tls", {}),
     ["spec.tls", "exactly one of secretName"]),
    ("subsite-markup-negative",
     _with(SS, "spec.catalog.priceRules", [{"category": "game-cards", "markupPercent": "-5"}]),
     ["spec.catalog.priceRules[0].markupPercent", "never below HQ cost"]),
    ("subsite-color", _with(SS, "spec.branding.primaryColor", "blue"),
     ["spec.branding.primaryColor", "hex colour"]),
    ("subsite-owner-email", _with(SS, "spec.owner.email", "not-an-email"),
     ["spec.owner.email", "e-mail address"]),
    ("subsite-replicas-zero", _with(SS, "spec.storefront.replicas", 0),
     ["spec.storefront.replicas", "should be greater than or equal to 1"]),
    ("subsite-reclaim-policy", _with(SS, "spec.database.reclaimPolicy", "Keep"),
     ["spec.database.reclaimPolicy", 'Unsupported value: "Keep"']),
    ("subsite-name-too-long", _with(SS, "metadata.name", "a" * 57),
     ["at most 56 characters", "kameng-<name>"]),
    ("subsite-logo-http", _with(SS, "spec.branding.logoUrl", "http://x.example/logo.png"),
     ["spec.branding.logoUrl", "https:// URL"]),
    ("subsite-duplicate-member",
     _with(SS, "spec.members", [{"name": "a", "email": "a@x.example", "role": "finance"},
                                {"name": "a", "email": "b@x.example", "role": "finance"}]),
     ["spec.members[1]", "Duplicate value"]),
    ("subsite-payment-unknown", _with(SS, "spec.payments.methods", ["paypal"]),
     ["spec.payments.methods[0]", 'Unsupported value: "paypal"']),
    ("rolepolicy-unknown-permission",
     _with(RP, "spec.roles", [{"name": "x", "permissions": ["finance:steal"]}]),
     ["spec.roles[0].permissions[0]", 'Unsupported value: "finance:steal"',
      '"finance:withdraw"']),
    ("rolepolicy-empty-permissions",
     _with(RP, "spec.roles", [{"name": "x", "permissions": []}]),
     ["spec.roles", "every role needs at least one permission"]),
    ("rolepolicy-bad-role-name",
     _with(RP, "spec.roles", [{"name": "Site Admin", "permissions": ["orders:read"]}]),
     ["spec.roles[0].name", "lowercase DNS label"]),
    ("rolepolicy-unknown-approval", _with(RP, "spec.approvals", ["everything"]),
     ["spec.approvals[0]", 'Unsupported value: "everything"']),
    ("rolepolicy-limit-without-its-approval",
     _with(_with(RP, "spec.approvals", ["domain"]), "spec.approvalLimits",
           {"withdrawalFen": 50000}),
     ["spec.approvalLimits.withdrawalFen", "only has an effect when approvals lists "
      "'finance:withdraw'"]),
    ("rolepolicy-negative-limit",
     _with(_with(RP, "spec.approvals", ["orders:refund"]), "spec.approvalLimits",
           {"refundFen": -1}),
     ["spec.approvalLimits.refundFen", "refundFen is an amount in fen"]),
]


@pytest.mark.parametrize(("obj", "expected"), [(o, e) for _, o, e in INVALID],
                         ids=[i for i, _, _ in INVALID])
def test_invalid_object_is_rejected_with_clear_message(kubectl, obj, expected):
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0, f"accepted an invalid object:\n{proc.stdout}"
    for text in expected:
        assert text in proc.stderr, f"{text!r} missing from:\n{proc.stderr}"


def test_at_least_fifteen_distinct_rejections():
    assert len({i for i, _, _ in INVALID}) >= 15


def test_license_subsite_is_immutable(kubectl):
    lic = _with(LIC, "metadata.name", "immutable-check")
    kubectl("apply", "-f", "-", input=json.dumps(lic))
    try:
        changed = _with(lic, "spec.subSite", "someone-else")
        proc = kubectl("apply", "-f", "-", input=json.dumps(changed), check=False)
        assert proc.returncode != 0
        assert "spec.subSite" in proc.stderr
        assert "subSite is immutable" in proc.stderr
        # Other fields stay editable.
        kubectl("apply", "-f", "-", input=json.dumps(_with(lic, "spec.plan", "flagship")))
    finally:
        kubectl("delete", "license", "immutable-check", "--wait=false", check=False)


def test_samples_apply_with_defaults_and_printer_columns(kubectl):
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("apply", "-f", str(SAMPLES))
    try:
        lic = json.loads(kubectl("get", "lic", "demo", "-o", "json").stdout)
        # Defaults come from the schema, so every reader sees the same values.
        assert lic["spec"]["fees"]["settlementPeriod"] == "Monthly"
        ss = json.loads(kubectl("get", "ss", "demo", "-o", "json").stdout)
        assert ss["spec"]["storefront"]["resources"] == {"cpu": "100m", "memory": "256Mi"}
        out = kubectl("get", "ss,lic,rp").stdout
        for header in ("PHASE", "READY", "LICENSE", "EXPIRES", "URL", "AGE", "SUBSITE", "PLAN",
                       "STATE", "ROLES", "USED-BY"):
            assert header in out, f"{header} column missing:\n{out}"
        assert "subsite.kameng.io/demo" in out
        assert "license.kameng.io/demo" in out
        assert "rolepolicy.kameng.io/standard" in out
        by_category = kubectl("get", "kameng").stdout
        assert "demo" in by_category
    finally:
        # Samples left behind would be reconciled by every later test's operator.
        kubectl("delete", "-f", str(SAMPLES), "--ignore-not-found", "--wait=false",
                check=False)


def test_minimal_subsite_gets_schema_defaults(kubectl):
    minimal = {"apiVersion": "kameng.io/v1alpha1", "kind": "SubSite",
               "metadata": {"name": "minimal"},
               "spec": {"displayName": "Minimal", "owner": {"name": "P", "email": "p@x.example"},
                        "licenseRef": "minimal", "domain": "minimal.example"}}
    out = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                  input=json.dumps(minimal)).stdout
    spec = json.loads(out)["spec"]
    assert spec["rolePolicyRef"] == "standard"
    assert spec["storefront"]["replicas"] == 1
    assert spec["database"]["reclaimPolicy"] == "Retain"
    assert spec["payments"]["methods"] == ["sandbox"]
    assert spec["branding"]["locale"] == "zh-CN"


def test_license_without_fees_is_valid_and_defaulted(kubectl):
    # Rules that read fees.revenueShare must hold when a person leaves fees out.
    lic = copy.deepcopy(LIC)
    del lic["spec"]["fees"]
    out = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                  input=json.dumps(lic)).stdout
    fees = json.loads(out)["spec"]["fees"]
    assert fees == {"currency": "CNY", "baseAnnualFee": "0", "revenueShare": [],
                    "settlementPeriod": "Monthly"}
