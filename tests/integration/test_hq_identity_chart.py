"""The chart's HQ RBAC binds ONE ServiceAccount, named by one value (issue 12, gap 2):
hq-rbac.yaml, hq-renewals-rbac.yaml and hq-plans-rbac.yaml used to mix a hard-coded
``kameng-hq`` with ``hqPlans.serviceAccount``, so renaming HQ's identity silently left
some capabilities bound to an account that no longer existed."""

from __future__ import annotations

import yaml

from tests.integration.test_helm_chart import CHART, helm  # noqa: F401 (fixture)

HQ_TEMPLATES = ("templates/hq-rbac.yaml", "templates/hq-renewals-rbac.yaml",
                "templates/hq-plans-rbac.yaml")


def _hq_docs(helm, *values: str) -> list[dict]:  # noqa: F811
    args = ["template", "kameng", str(CHART), "--namespace", "partner-hq",
            "--set", "hqPlans.enabled=true", *values]
    for t in HQ_TEMPLATES:
        args += ["--show-only", t]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def test_every_hq_role_binds_the_one_service_account_value(helm, kubectl):  # noqa: F811
    docs = _hq_docs(helm, "--set", "hqServiceAccount=storefront-hq")
    accounts = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    assert accounts == ["storefront-hq"]
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    # onboarding, invitations, approvals, renewals, plans
    assert len(bindings) == 5, [b["metadata"]["name"] for b in bindings]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "storefront-hq",
                                  "namespace": "partner-hq"}], b["metadata"]["name"]
    # The default is the name the docs use, and the API server accepts the objects.
    docs = _hq_docs(helm)
    assert {s["name"] for d in docs for s in d.get("subjects", [])} == {"kameng-hq"}
    kubectl("apply", "--dry-run=server", "-f", "-",
            input=yaml.safe_dump_all([d for d in docs if d["kind"] != "RoleBinding"
                                      and d["kind"] != "Role"
                                      and d["kind"] != "ServiceAccount"]))
