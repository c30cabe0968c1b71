from __future__ import annotations

from kameng.api.subsite import SubSiteSpec
from kameng.children.config import config_map
from kameng.children.context import SiteContext
from kameng.children.workload import (
    CHECKSUM_ANNOTATION,
    config_checksum,
    deployment,
    pod_disruption_budget,
    service,
)

BASE = {"displayName": "D", "owner": {"name": "P", "email": "p@x.example"},
        "licenseRef": "demo", "domain": "demo.shop.example",
        "storefront": {"replicas": 3, "image": "example/sf:1",
                       "resources": {"cpu": "200m", "memory": "300Mi"}}}


def ctx(**spec: object) -> SiteContext:
    return SiteContext(name="demo", uid="u", spec=SubSiteSpec.model_validate({**BASE, **spec}))


def test_deployment_is_restricted() -> None:
    d = deployment(ctx(), "abc")
    pod = d["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "ops": 9090}
    assert c["resources"] == {"requests": {"cpu": "200m", "memory": "300Mi"},
                              "limits": {"memory": "300Mi"}}
    assert c["image"] == "example/sf:1"
    assert d["spec"]["replicas"] == 3


def test_secrets_and_config_are_mounted_where_the_storefront_reads_them() -> None:
    pod = deployment(ctx(), "abc")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/etc/kameng/config", "/etc/kameng/secrets/storefront-db",
            "/etc/kameng/secrets/license", "/tmp"} <= mounts
    assert all(m.get("readOnly") for m in pod["containers"][0]["volumeMounts"]
               if m["mountPath"] != "/tmp")


def test_checksum_annotation_rolls_pods_on_config_change() -> None:
    a = config_checksum([config_map(ctx())])
    b = config_checksum([config_map(ctx(branding={"title": "new"}))])
    assert a != b
    tmpl = deployment(ctx(), a)["spec"]["template"]["metadata"]
    assert tmpl["annotations"][CHECKSUM_ANNOTATION] == a


def test_default_image_comes_from_the_platform() -> None:
    c = deployment(ctx(storefront={}), "x")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == ctx().platform.storefront_image


def test_service_and_pdb_select_the_storefront_pods() -> None:
    d = deployment(ctx(), "x")
    sel = d["spec"]["selector"]["matchLabels"]
    assert service(ctx())["spec"]["selector"] == sel
    pdb = pod_disruption_budget(ctx())
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": sel}}
    assert set(sel.items()) <= set(d["spec"]["template"]["metadata"]["labels"].items())


def test_volumes_mounts_and_env_are_the_pod_contracts() -> None:
    from kameng.contracts import pod

    spec = deployment(ctx(), "abc")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    secret_vols = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert sorted(secret_vols.values()) == sorted(pod.SITE_SECRETS)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    for vol, secret in secret_vols.items():
        assert mounts[vol] == pod.mount_path(secret)
        for key in pod.keys_of(secret):
            assert key.path().startswith(mounts[vol] + "/")
    (cm,) = [v for v in spec["volumes"] if "configMap" in v]
    assert cm["configMap"]["name"] == pod.CONFIGMAP_NAME
    assert f"{mounts[cm['name']]}/{pod.CONFIGMAP_KEY}" == pod.DEFAULT_CONFIG_PATH
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env[pod.SITE_CONFIG_FILE_ENV] == pod.DEFAULT_CONFIG_PATH
    assert env[pod.SECRETS_ROOT_ENV] == pod.SECRETS_ROOT
    assert env[pod.MODE_ENV] == "subsite"


def test_probes_and_metrics_are_never_behind_the_ingress() -> None:
    """The Service exposes the ops port under its own name; the Ingress routes only http;
    the NetworkPolicy lets the ingress controller reach only the public port."""
    from kameng.children.ingress import ingress
    from kameng.children.network import storefront_allow

    svc = service(ctx())
    assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == \
        [("http", "http"), ("ops", "ops")]
    backends = [p["backend"]["service"]["port"] for r in ingress(ctx())["spec"]["rules"]
                for p in r["http"]["paths"]]
    assert backends == [{"name": "http"}]
    (rule,) = storefront_allow(ctx())["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_storefront_workers_follow_the_cpu_request() -> None:
    """One worker process per whole core requested (a Python process uses one), at least
    one, at most MAX_WORKERS; the pod's DB pool is split between them by the storefront."""
    from kameng.children.workload import MAX_WORKERS, storefront_workers
    from kameng.contracts import pod

    assert [storefront_workers(c) for c in ("100m", "500m", "1", "1500m", "2", "3.9")] == \
        [1, 1, 1, 1, 2, 4]
    assert storefront_workers("64") == MAX_WORKERS
    assert storefront_workers("lots") == 1
    c = deployment(ctx(storefront={"resources": {"cpu": "2"}}), "abc")[
        "spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["value"] for e in c["env"]}[pod.WORKERS_ENV] == "2"
