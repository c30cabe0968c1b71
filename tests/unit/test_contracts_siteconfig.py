import json
from decimal import Decimal

import pytest

from kameng.contracts.siteconfig import (
    DEFAULT_ROLES,
    SiteConfig,
    SiteConfigError,
    load_site_config,
)

SAMPLE = {
    "site": "demo",
    "displayName": "Demo 分站",
    "branding": {"title": "Demo", "logoUrl": "", "primaryColor": "#112233", "locale": "en"},
    "categories": ["game", "mobile"],
    "regions": ["CN-31"],
    "priceRules": [
        {"category": "game", "markupPercent": 12.5},
        {"category": "*", "markupPercent": "5"},
    ],
    "hiddenProducts": ["p-hidden"],
    "roles": [{"name": "finance", "permissions": ["finance:read"]}],
    "mode": "readOnly",
    "hqUrl": "http://hq",
    "hqPublicKey": "AAAA",
    "payments": {"methods": ["sandbox"]},
    "members": [{"name": "a", "email": "a@x", "role": "finance"}],
}


def test_parses_camel_case_and_role_list():
    cfg = SiteConfig.model_validate(SAMPLE)
    assert cfg.display_name == "Demo 分站"
    assert cfg.branding.primary_color == "#112233"
    assert cfg.permissions_for("finance") == {"finance:read"}
    assert cfg.permissions_for("nobody") == frozenset()
    assert cfg.markup_for("game") == Decimal("12.5")
    assert cfg.markup_for("other") == Decimal("5")
    assert cfg.mode == "readOnly"


def test_json_round_trip_is_canonical():
    cfg = SiteConfig.model_validate(SAMPLE)
    text = cfg.to_json()
    assert json.loads(text)["priceRules"][0]["markupPercent"] == "12.5"
    assert SiteConfig.from_json(text) == cfg
    assert SiteConfig.from_json(text).to_json() == text


def test_unknown_permission_and_bad_site_rejected():
    with pytest.raises(SiteConfigError):
        SiteConfig.from_json(json.dumps({**SAMPLE, "roles": {"x": ["root:all"]}}))
    with pytest.raises(SiteConfigError):
        SiteConfig.from_json(json.dumps({**SAMPLE, "site": "Bad_Name"}))


def test_default_roles_use_vocabulary():
    cfg = SiteConfig(site="s", roles=DEFAULT_ROLES)
    assert "finance:withdraw" not in cfg.permissions_for("site-admin")
    assert "catalog:write" not in cfg.permissions_for("finance")


def test_load_from_env_inline_and_file(tmp_path):
    text = json.dumps(SAMPLE)
    assert load_site_config(env={"KAMENG_SITE_CONFIG": text}).site == "demo"
    f = tmp_path / "site.json"
    f.write_text(text, encoding="utf-8")
    assert load_site_config(env={"KAMENG_SITE_CONFIG_FILE": str(f)}).site == "demo"
    with pytest.raises(SiteConfigError):
        load_site_config(env={"KAMENG_SITE_CONFIG_FILE": str(tmp_path / "missing.json")})
