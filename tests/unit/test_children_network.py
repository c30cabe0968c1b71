from __future__ import annotations

from kameng.api.subsite import SubSiteSpec
from kameng.children.context import Platform, SiteContext
from kameng.children.network import default_deny, network_policies, storefront_allow

SPEC = {"displayName": "Demo", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example"}


def ctx(**platform: object) -> SiteContext:
    return SiteContext(name="demo", uid="u", spec=SubSiteSpec.model_validate(SPEC),
                       platform=Platform(**platform))  # type: ignore[arg-type]


def test_default_deny_selects_every_pod_both_directions() -> None:
    spec = default_deny(ctx())["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_storefront_allows_only_ingress_controller_in() -> None:
    spec = storefront_allow(ctx(ingress_namespace="ingress-nginx"))["spec"]
    (rule,) = spec["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_egress_dns_hq_postgres_redis() -> None:
    spec = storefront_allow(ctx(postgres_host="10.0.0.5", postgres_port=5433,
                                redis_host="redis.db.svc", redis_port=6380))["spec"]
    ports = [p["port"] for r in spec["egress"] for p in r["ports"]]
    assert ports == [53, 53, 8080, 5433, 6380]
    pg = spec["egress"][2]
    assert pg["to"] == [{"ipBlock": {"cidr": "10.0.0.5/32"}}]
    # A DNS name cannot be a NetworkPolicy peer: only the port is restricted.
    assert "to" not in spec["egress"][3]
    hq = spec["egress"][1]["to"][0]["namespaceSelector"]["matchLabels"]
    assert hq == {"kubernetes.io/metadata.name": "kameng-system"}


def test_two_policies_in_the_site_namespace() -> None:
    pols = network_policies(ctx())
    assert [p["metadata"]["name"] for p in pols] == ["default-deny", "storefront"]
    assert {p["metadata"]["namespace"] for p in pols} == {"kameng-demo"}
