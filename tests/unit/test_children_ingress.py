from __future__ import annotations

from kameng.api.subsite import SubSiteSpec
from kameng.children.context import Platform, SiteContext
from kameng.children.ingress import ISSUER_ANNOTATION, ingress

BASE = {"displayName": "D", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "shop.partner.example"}


def ctx(platform: Platform | None = None, **spec: object) -> SiteContext:
    return SiteContext(name="demo", uid="u", spec=SubSiteSpec.model_validate({**BASE, **spec}),
                       platform=platform or Platform())


def test_host_routes_to_the_service() -> None:
    ing = ingress(ctx())
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "shop.partner.example"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "storefront"
    assert "tls" not in ing["spec"]
    assert "annotations" not in ing["metadata"]
    assert ctx().url == "http://shop.partner.example"


def test_tls_from_existing_secret() -> None:
    c = ctx(tls={"secretName": "shop-cert"})
    ing = ingress(c)
    assert ing["spec"]["tls"] == [{"hosts": ["shop.partner.example"], "secretName": "shop-cert"}]
    assert c.url == "https://shop.partner.example"


def test_tls_from_cert_manager_issuer() -> None:
    ing = ingress(ctx(tls={"clusterIssuer": "letsencrypt"}))
    assert ing["metadata"]["annotations"] == {ISSUER_ANNOTATION: "letsencrypt"}
    assert ing["spec"]["tls"][0]["secretName"] == "storefront-tls"


def test_ingress_class_from_platform() -> None:
    assert ingress(ctx(Platform(ingress_class="nginx")))["spec"]["ingressClassName"] == "nginx"
