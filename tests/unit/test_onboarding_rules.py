"""Pure rules of onboarding and approvals: the application form, what approval creates,
the GitOps bundle, the change patches, and the operator's record of approvable fields."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

import pytest
import yaml

from kameng.api.license import LicenseSpec
from kameng.api.names import site_name_refusal
from kameng.api.subsite import SubSiteSpec
from kameng.contracts.hq_api import change_patch
from kameng.controller.status import change_events, fingerprints, record_changes
from kameng_storefront.hq.onboarding import (
    MAX_LOGO_BYTES,
    SiteChoice,
    bundle,
    manifests,
    parse_application,
)
from kameng_storefront.shop.requests import change_from_form

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
FORM = {"company": "Galaxy Digital", "contact_name": "Chen", "contact_email": "Chen@X.example",
        "site_name": "galaxy", "domain": "shop.galaxy.example", "plan": "basic",
        "categories": "game-cards，mobile-topup game-cards", "regions": "cn-31",
        "capability": "ok"}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_valid_form_is_normalised() -> None:
    app, err = parse_application(FORM, ("logo.png", PNG), [("a.pdf", b"%PDF-1.4 x")])
    assert not err
    assert app.contact_email == "chen@x.example"
    assert app.categories == ("game-cards", "mobile-topup")  # both commas, deduplicated
    assert app.regions == ("CN-31",)
    assert app.logo is not None
    assert app.logo.content_type == "image/png"
    assert app.documents[0].content_type == "application/pdf"


@pytest.mark.parametrize(("field", "value", "key"), [
    ("site_name", "system", "apply_err_site_reserved"),
    ("site_name", "kube-x", "apply_err_site_reserved"),
    ("site_name", "Bad_Name", "apply_err_site_name"),
    ("site_name", "a" * 57, "apply_err_site_name"),
    ("domain", "localhost", "apply_err_domain"),
    ("plan", "gold", "apply_err_plan"),
    ("categories", "", "apply_err_categories"),
    ("regions", "Shanghai", "apply_err_regions"),
    ("contact_email", "no-at-sign", "apply_err_email"),
])
def test_each_bad_field_gets_its_message(field: str, value: str, key: str) -> None:
    _, err = parse_application({**FORM, field: value}, None, [])
    assert err.fields == {field: key}


def test_uploads_are_judged_by_their_bytes_and_size() -> None:
    _, err = parse_application(FORM, ("logo.png", b"<svg/>"), [])
    assert err.fields == {"logo": "apply_err_logo_type"}
    _, err = parse_application(FORM, ("logo.png", PNG + b"0" * MAX_LOGO_BYTES), [])
    assert err.fields == {"logo": "apply_err_logo_size"}
    _, err = parse_application(FORM, None, [("x.exe", b"MZ\x90")])
    assert err.fields == {"documents": "apply_err_doc_type"}
    _, err = parse_application(FORM, None, [("a.pdf", b"%PDF-")] * 4)
    assert err.fields == {"documents": "apply_err_doc_size"}


def test_site_name_rules_are_the_crds() -> None:
    assert site_name_refusal("galaxy") is None
    assert site_name_refusal("hq") is not None
    assert site_name_refusal("-x") is not None


def _row() -> dict[str, object]:
    app, _ = parse_application(FORM, None, [])
    return {"id": "Aabc", "site_name": app.site_name, "company": app.company,
            "contact_name": app.contact_name, "contact_email": app.contact_email,
            "domain": app.domain, "plan": app.plan, "categories": list(app.categories),
            "regions": list(app.regions), "has_logo": True}


def test_approval_objects_are_deterministic_valid_and_labelled() -> None:
    choice = SiteChoice("standard", "site-admin", "https://hq.example")
    lic, ss = manifests(_row(), choice, NOW)
    assert manifests(_row(), choice, NOW) == [lic, ss]
    assert lic["metadata"]["name"] == ss["metadata"]["name"] == "galaxy"
    assert ss["metadata"]["labels"]["kameng.io/onboarding-application"] == "Aabc"
    LicenseSpec.model_validate(lic["spec"])
    spec = SubSiteSpec.model_validate(ss["spec"])
    assert spec.members[0].email == "chen@x.example"
    assert spec.branding.logo_url == "https://hq.example/apply/Aabc/logo"
    # An http:// HQ cannot be the logo's home (the CRD wants https).
    _, ss = manifests(_row(), SiteChoice("standard", "site-admin", "http://hq"), NOW)
    assert "logoUrl" not in ss["spec"]["branding"]


def test_bundle_holds_the_same_objects() -> None:
    objs = manifests(_row(), SiteChoice("standard", "site-admin", "http://hq"), NOW)
    with zipfile.ZipFile(io.BytesIO(bundle(_row(), objs))) as z:
        assert yaml.safe_load(z.read("galaxy/license.yaml")) == objs[0]
        assert yaml.safe_load(z.read("galaxy/subsite.yaml")) == objs[1]
        assert yaml.safe_load(z.read("galaxy/kustomization.yaml"))["resources"] == [
            "license.yaml", "subsite.yaml"]


def test_change_patches_are_validated_by_the_subsite_models() -> None:
    assert change_patch("domain", {"domain": "New.Example.com"}) == {
        "spec": {"domain": "new.example.com"}}
    for kind, change in (("domain", {"domain": "nodot"}),
                         ("payments.methods", {"methods": []}),
                         ("catalog.priceRules", {"priceRules": [
                             {"category": "x", "markupPercent": "-1"}]}),
                         ("members", {"members": []}),
                         ("finance:withdraw", {})):
        with pytest.raises(ValueError):  # noqa: PT011 - each refusal has its own message
            change_patch(kind, change)


def test_back_office_forms_become_changes() -> None:
    assert change_from_form("catalog.priceRules", {"price_rules": "a=1\n\nb = 2.5"},
                            lambda k: []) == {"priceRules": [
                                {"category": "a", "markupPercent": "1"},
                                {"category": "b", "markupPercent": "2.5"}]}
    assert change_from_form("payments.methods", {}, lambda k: ["sandbox", "alipay"]) == {
        "methods": ["sandbox", "alipay"]}
    with pytest.raises(ValueError, match="name,email,role"):
        change_from_form("members", {"members": "only-a-name"}, lambda k: [])


def test_operator_records_where_an_approvable_change_came_from() -> None:
    spec = {"domain": "a.example", "payments": {"methods": ["sandbox"]}}
    first = record_changes(None, spec, "", NOW)
    assert "changeHistory" not in first  # the baseline, nothing to report
    assert change_events(None, first, ()) == []
    edited = {**spec, "domain": "b.example"}
    yaml_edit = record_changes(first, edited, "", NOW)
    assert yaml_edit["changeHistory"] == [
        {"at": "2026-12-01T12:00:00Z", "fields": ["domain"], "source": "yaml"}]
    assert change_events(first, yaml_edit, ("domain",))[0][:2] == (
        "Warning", "ChangedOutsideApproval")
    approved = record_changes(yaml_edit, {**edited, "payments": {"methods": ["alipay"]}},
                              "R1", NOW)
    assert approved["changeHistory"][-1] == {
        "at": "2026-12-01T12:00:00Z", "fields": ["payments.methods"], "source": "approval",
        "request": "R1"}
    assert change_events(yaml_edit, approved, ())[0][:2] == ("Normal", "ApprovedChangeApplied")
    # Unchanged: byte-identical status, no write, no Event.
    again = record_changes(approved, {**edited, "payments": {"methods": ["alipay"]}}, "R1", NOW)
    assert again == approved
    assert change_events(approved, again, ()) == []
    assert fingerprints(spec) == fingerprints(dict(spec))
