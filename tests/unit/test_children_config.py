from __future__ import annotations

import json
from decimal import Decimal

from kameng.api.license import LicenseSpec
from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.config import config_map, site_config
from kameng.children.context import Platform, SiteContext
from kameng.contracts.siteconfig import SiteConfig

SPEC = {"displayName": "Demo Cards", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example",
        "branding": {"title": "星辰", "primaryColor": "#1f6feb"},
        "catalog": {"priceRules": [{"category": "game-cards", "markupPercent": "12.5"}],
                    "hiddenProducts": ["sku-1"]},
        "members": [{"name": "li", "email": "li@x.example", "role": "site-admin"}]}
LIC = LicenseSpec.model_validate({
    "subSite": "demo", "plan": "basic", "categories": ["game-cards"], "regions": ["CN-31"],
    "term": {"start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"}})
RP = RolePolicySpec.model_validate({"roles": [
    {"name": "site-admin", "permissions": ["catalog:read", "catalog:write"]}]})


def ctx(**kw: object) -> SiteContext:
    base: dict = {"name": "demo", "uid": "u", "spec": SubSiteSpec.model_validate(SPEC),
                  "license": LIC, "role_policy": RP, "mode": "normal",
                  "platform": Platform(hq_url="http://hq", hq_public_url="https://hq.example",
                                       hq_public_key="PUB")}
    base.update(kw)
    return SiteContext(**base)


def test_site_config_carries_the_contract_fields() -> None:
    cfg = site_config(ctx())
    assert cfg.site == "demo"
    assert cfg.roles == {"site-admin": ["catalog:read", "catalog:write"]}
    assert cfg.categories == ["game-cards"]
    assert cfg.regions == ["CN-31"]
    assert cfg.markup_for("game-cards") == Decimal("12.5")
    assert cfg.hidden_products == ["sku-1"]
    assert cfg.branding.title == "星辰"
    assert cfg.branding.primary_color == "#1f6feb"
    assert (cfg.mode, cfg.hq_url, cfg.hq_public_key) == ("normal", "http://hq", "PUB")
    assert cfg.hq_public_url == "https://hq.example"  # where the pay links point
    assert [m.name for m in cfg.members] == ["li"]


def test_without_license_nothing_is_licensed() -> None:
    cfg = site_config(ctx(license=None, mode="suspended"))
    assert cfg.categories == []
    assert cfg.mode == "suspended"


def test_config_map_round_trips_through_the_contract() -> None:
    cm = config_map(ctx())
    assert cm["metadata"]["name"] == "storefront-config"
    text = cm["data"]["site.json"]
    assert SiteConfig.from_json(text) == site_config(ctx())
    assert json.loads(text)["priceRules"][0]["markupPercent"] == "12.5"


def test_rendering_is_deterministic() -> None:
    assert config_map(ctx()) == config_map(ctx())
