"""The typed models accept the samples and reject what the CRDs reject in Python too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kameng.api.license import LicenseSpec
from kameng.api.subsite import SubSiteSpec

ROOT = Path(__file__).resolve().parents[2]


def _sample(name: str) -> dict:
    return yaml.safe_load((ROOT / "manifests/samples" / name).read_text())


def test_samples_parse_with_defaults():
    ss = SubSiteSpec.model_validate(_sample("subsite-demo.yaml")["spec"])
    assert ss.storefront.replicas == 2
    assert ss.database.reclaim_policy == "Delete"
    assert ss.storefront.resources.cpu == "100m"
    lic = LicenseSpec.model_validate(_sample("license-demo.yaml")["spec"])
    assert lic.grace_period == "72h"
    assert lic.renewal.strategy == "FromExpiry"
    assert [r.percent for r in lic.fees.revenue_share] == ["8", "2.5"]


def test_wire_form_is_camel_case_and_round_trips():
    spec = _sample("subsite-demo.yaml")["spec"]
    model = SubSiteSpec.model_validate(spec)
    wire = model.to_wire()
    assert wire["licenseRef"] == "demo"
    assert "license_ref" not in wire
    assert SubSiteSpec.model_validate(wire) == model


@pytest.mark.parametrize(("patch", "field"), [
    ({"domain": "Shop.Example"}, "domain"),
    ({"licenseRef": "Bad_Name"}, "licenseRef"),
    ({"unknownField": 1}, "unknownField"),
    ({"storefront": {"replicas": 0}}, "replicas"),
    ({"database": {"reclaimPolicy": "Keep"}}, "reclaimPolicy"),
    ({"branding": {"primaryColor": "red"}}, "primaryColor"),
])
def test_subsite_invalid(patch, field):
    spec = {**_sample("subsite-demo.yaml")["spec"], **patch}
    with pytest.raises(ValidationError) as e:
        SubSiteSpec.model_validate(spec)
    assert field in str(e.value)


@pytest.mark.parametrize(("patch", "field"), [
    ({"plan": "gold"}, "plan"),
    ({"categories": []}, "categories"),
    ({"regions": ["Shanghai"]}, "regions"),
    ({"fees": {"baseAnnualFee": "12,000"}}, "baseAnnualFee"),
])
def test_license_invalid(patch, field):
    spec = {**_sample("license-demo.yaml")["spec"], **patch}
    with pytest.raises(ValidationError) as e:
        LicenseSpec.model_validate(spec)
    assert field in str(e.value)
