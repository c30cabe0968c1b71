"""Tenancy and ownership on the dev environment: the operator touches only what it
created for this very SubSite, hands retained data over only when asked, bounds and
isolates each site's database, keeps members away from Secrets, gives a domain to one
SubSite only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.operator import OperatorProcess

from .test_operator_lifecycle import fresh_start, get, sample_objects, secret_value, wait_for

RP = "it-ten-rp"
FOREIGN_PW = "foreign-role-password-123"


def ident(name: str) -> str:
    return "kameng_" + name.replace("-", "_")


def apply_site(kubectl: Any, name: str, policy: str = "Delete",
               **spec: Any) -> None:
    docs = sample_objects(name, RP)
    docs[2]["spec"]["database"] = {"reclaimPolicy": policy}
    docs[2]["spec"].update(spec)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def conditions(kubectl: Any, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in get(kubectl, "subsite", name).get("status", {})
            .get("conditions", [])}


def wait_reason(kubectl: Any, name: str, reason: str, timeout: float = 20
                ) -> dict[str, dict[str, Any]]:
    def check() -> dict[str, dict[str, Any]] | None:
        conds = conditions(kubectl, name)
        return conds if conds.get("Ready", {}).get("reason") == reason else None
    return wait_for(check, timeout, f"{name} Ready reason {reason}")


def events_of(kubectl: Any, name: str) -> str:
    return kubectl("get", "events", "-n", "default", "--field-selector",
                   f"involvedObject.name={name}", "-o", "json").stdout


def exists(kubectl: Any, *args: str) -> bool:
    return kubectl("get", *args, check=False).returncode == 0


def admin(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def dsn_for(admin_dsn: str, user: str, password: str, db: str) -> str:
    info = conninfo_to_dict(admin_dsn)
    return make_conninfo(host=info["host"], port=info["port"], user=user,
                         password=password, dbname=db, connect_timeout=5)


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    yield op
    op.stop()
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found")


def test_reserved_names_are_rejected_at_admission(kubectl: Any) -> None:
    for name in ("system", "admin", "default", "kube-things"):
        docs = sample_objects(name, RP)
        out = kubectl("apply", "--dry-run=server", "-f", "-",
                      input=yaml.safe_dump(docs[2]), check=False)
        assert out.returncode != 0, name
        assert "this SubSite name is reserved" in out.stderr, out.stderr


def test_foreign_role_database_and_namespace_are_never_touched(
        operator: OperatorProcess, kubectl: Any, pg_admin_dsn: str) -> None:
    """A SubSite whose derived names are taken by objects the operator did not create:
    refused with NameConflict and an Event; the role keeps its password, the database
    survives the SubSite's deletion (reclaimPolicy Delete), the namespace too."""
    name, ns_site, super_site = "it-ten-foreign", "it-ten-ns", "it-ten-super"
    role, super_role = ident(name), ident(super_site)
    fresh_start(kubectl, name, ns_site, super_site)
    with admin(pg_admin_dsn) as conn:
        for r in (role, super_role):
            conn.execute(f'DROP DATABASE IF EXISTS "{r}"')
            conn.execute(f'DROP ROLE IF EXISTS "{r}"')
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{FOREIGN_PW}'")
        conn.execute(f'CREATE DATABASE "{role}" OWNER "{role}"')
        # A superuser role, marked as if it were the site's: privileged roles are never
        # touched, whatever their comment says.
        conn.execute(f"CREATE ROLE \"{super_role}\" LOGIN SUPERUSER PASSWORD '{FOREIGN_PW}'")
    kubectl("create", "namespace", f"kameng-{ns_site}", check=False)
    try:
        apply_site(kubectl, name)
        apply_site(kubectl, ns_site)
        apply_site(kubectl, super_site)
        with admin(pg_admin_dsn) as conn:
            uid = get(kubectl, "subsite", super_site)["metadata"]["uid"]
            conn.execute(f"COMMENT ON ROLE \"{super_role}\" IS 'kameng:subsite-uid={uid}'")
        conds = wait_reason(kubectl, super_site, "NameConflict")
        assert "privileged role" in conds["Ready"]["message"]
        with psycopg.connect(dsn_for(pg_admin_dsn, super_role, FOREIGN_PW, "postgres")) as c:
            c.execute("SELECT 1")  # password unchanged
        conds = wait_reason(kubectl, name, "NameConflict")
        assert conds["Stalled"]["status"] == "True"
        assert f"PostgreSQL role {role}" in conds["Ready"]["message"]
        assert "NameConflict" in events_of(kubectl, name)
        conds = wait_reason(kubectl, ns_site, "NameConflict")
        assert f"namespace kameng-{ns_site}" in conds["Ready"]["message"]
        assert "NameConflict" in events_of(kubectl, ns_site)
        # Nothing was created or changed for them.
        assert not exists(kubectl, "namespace", f"kameng-{name}")
        with psycopg.connect(dsn_for(pg_admin_dsn, role, FOREIGN_PW, role)) as c:
            c.execute("SELECT 1")
        ns = get(kubectl, "namespace", f"kameng-{ns_site}")
        assert "kameng.io/subsite-uid" not in ns["metadata"].get("labels", {})
        assert not exists(kubectl, "resourcequota", "storefront-quota", "-n",
                          f"kameng-{ns_site}")

        kubectl("delete", "subsite", name, ns_site, super_site, "--wait=true",
                "--timeout=30s", timeout=60)
        with admin(pg_admin_dsn) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (role,)).fetchone()
            assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                (role,)).fetchone() == (True,)
        ns = get(kubectl, "namespace", f"kameng-{ns_site}")
        assert not ns["metadata"].get("deletionTimestamp")
    finally:
        kubectl("delete", "subsite", name, ns_site, super_site, "--ignore-not-found",
                "--wait=false")
        kubectl("delete", "namespace", f"kameng-{ns_site}", "--ignore-not-found",
                "--wait=false")
        kubectl("delete", "license", name, ns_site, super_site, "--ignore-not-found")
        with admin(pg_admin_dsn) as conn:
            for r in (role, super_role):
                conn.execute(f'DROP DATABASE IF EXISTS "{r}" WITH (FORCE)')
                conn.execute(f'DROP ROLE IF EXISTS "{r}"')


def test_sites_of_the_previous_version_are_marked_and_keep_working(
        operator: OperatorProcess, kubectl: Any, pg_admin_dsn: str, redis_url: str) -> None:
    """A site provisioned before marks existed (namespace with our managed-by label and
    this SubSite's ownerReference, unmarked role and database): adopted and marked."""
    name = "it-ten-legacy"
    role = ident(name)
    fresh_start(kubectl, name)
    apply_site(kubectl, name)
    try:
        kubectl.wait_ready(f"subsite/{name}", 20)
        uid = get(kubectl, "subsite", name)["metadata"]["uid"]
        operator.stop()
        # Strip every mark, as the previous version left things.
        kubectl("label", "namespace", f"kameng-{name}", "kameng.io/subsite-uid-")
        kubectl("label", "secret", f"kameng-keys-{name}", "-n", "kameng-system",
                "kameng.io/subsite-uid-")
        with admin(pg_admin_dsn) as conn:
            conn.execute(f'COMMENT ON ROLE "{role}" IS NULL')
            conn.execute(f'COMMENT ON DATABASE "{role}" IS NULL')
        redis.Redis.from_url(redis_url).hdel("kameng:acl-owners", f"kameng-site-{name}")
        operator.start()
        kubectl("patch", "subsite", name, "--type=merge", "-p",
                json.dumps({"spec": {"displayName": "Legacy, upgraded"}}))

        def marked() -> bool:
            ns = get(kubectl, "namespace", f"kameng-{name}")
            with admin(pg_admin_dsn) as conn:
                comments = conn.execute(
                    "SELECT shobj_description(r.oid, 'pg_authid'), "
                    "shobj_description(d.oid, 'pg_database') FROM pg_roles r, pg_database d "
                    "WHERE r.rolname = %s AND d.datname = %s", (role, role)).fetchone()
            return (ns["metadata"]["labels"].get("kameng.io/subsite-uid") == uid
                    and comments == (f"kameng:subsite-uid={uid}",) * 2)

        wait_for(marked, 20, "legacy site marked")
        kubectl.wait_ready(f"subsite/{name}", 20)
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true", timeout=60)
        kubectl("delete", "license", name, "--ignore-not-found")


def test_retained_data_goes_to_a_new_subsite_only_when_asked(
        operator: OperatorProcess, kubectl: Any, pg_admin_dsn: str) -> None:
    name = "it-ten-retain"
    role = ident(name)
    fresh_start(kubectl, name)
    try:
        apply_site(kubectl, name, policy="Retain")
        kubectl.wait_ready(f"subsite/{name}", 20)
        old_uid = get(kubectl, "subsite", name)["metadata"]["uid"]
        dsn = secret_value(kubectl, f"kameng-{name}", "storefront-db", "dsn")
        key = secret_value(kubectl, f"kameng-{name}", "storefront-keys", "data-key")
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as c:
            c.execute("CREATE TABLE old_tenant (secret text)")
            c.execute("INSERT INTO old_tenant VALUES ('staff hashes and contacts')")
        kubectl("delete", "subsite", name, "--wait=true", "--timeout=30s", timeout=60)
        fresh_start(kubectl, name)
        # The exit terminated the License; HQ reinstates it on purpose for the adoption
        # (a terminated License licenses no new SubSite).
        kubectl("annotate", "license", name, "kameng.io/terminated-at-")

        apply_site(kubectl, name, policy="Retain")
        conds = wait_reason(kubectl, name, "RetainedDataExists")
        assert f"adoptRetainedFrom: {old_uid}" in conds["Ready"]["message"]
        assert conds["Stalled"]["status"] == "True"
        assert "RetainedDataExists" in events_of(kubectl, name)
        assert not exists(kubectl, "namespace", f"kameng-{name}")
        with admin(pg_admin_dsn) as conn:  # still locked, still the old tenant's
            assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                (role,)).fetchone() == (False,)

        kubectl("patch", "subsite", name, "--type=merge", "-p", json.dumps(
            {"spec": {"database": {"adoptRetainedFrom": old_uid}}}))
        kubectl.wait_ready(f"subsite/{name}", 30)
        new_dsn = secret_value(kubectl, f"kameng-{name}", "storefront-db", "dsn")
        with psycopg.connect(new_dsn, connect_timeout=5) as c:
            assert c.execute("SELECT secret FROM old_tenant").fetchone() == (
                "staff hashes and contacts",)
        assert secret_value(kubectl, f"kameng-{name}", "storefront-keys", "data-key") == key
    finally:
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true", timeout=60)
        kubectl("delete", "license", name, "--ignore-not-found")
        kubectl("delete", "secret", f"kameng-keys-{name}", "-n", "kameng-system",
                "--ignore-not-found")
        with admin(pg_admin_dsn) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(scope="module")
def ready_site(operator: OperatorProcess, kubectl: Any) -> Iterator[str]:
    name = "it-ten-site"
    fresh_start(kubectl, name)
    apply_site(kubectl, name)
    kubectl.wait_ready(f"subsite/{name}", 20)
    yield name
    kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=true", timeout=60)
    kubectl("delete", "license", name, "--ignore-not-found")


def test_site_role_is_limited_and_reaches_only_its_database(
        ready_site: str, kubectl: Any, pg_admin_dsn: str) -> None:
    role = ident(ready_site)
    with admin(pg_admin_dsn) as conn:
        assert conn.execute("SELECT rolconnlimit, rolsuper FROM pg_roles WHERE rolname = %s",
                            (role,)).fetchone() == (40, False)
        dbs = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn").fetchall()]
    dsn = secret_value(kubectl, f"kameng-{ready_site}", "storefront-db", "dsn")
    for db in dbs:
        if db == role:
            continue
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(dsn.rsplit("/", 1)[0] + "/" + db, connect_timeout=5)
    # The pods' pools fit within the limit, rolling update included.
    dep = get(kubectl, "deployment", "storefront", "-n", f"kameng-{ready_site}")
    env = {e["name"]: e.get("value") for e in
           dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert int(env["KAMENG_DB_POOL_SIZE"]) * (dep["spec"]["replicas"] + 1) <= 40


def test_members_never_reach_secrets(ready_site: str, kubectl: Any) -> None:
    ns = f"kameng-{ready_site}"
    rp = get(kubectl, "rolepolicy", RP)
    roles = rp["spec"]["roles"]
    for r in roles:
        if r["name"] == "site-admin":
            r["kubernetes"] = {"access": "operate"}
    kubectl("patch", "rolepolicy", RP, "--type=merge", "-p",
            json.dumps({"spec": {"roles": roles}}))
    wait_for(lambda: get(kubectl, "role", "member-li-wei", "-n", ns)["metadata"]
             ["annotations"]["kameng.io/access"] == "operate", 15, "operate role")
    user = "li.wei"

    def can(verb: str, what: str, *extra: str) -> bool:
        out = kubectl("auth", "can-i", verb, what, *extra, "-n", ns, "--as", user,
                      check=False)
        return out.stdout.strip() == "yes"

    assert can("delete", "pods")
    assert can("patch", "deployments/storefront") is False
    assert can("update", "deployments/storefront", "--subresource=scale")
    for verb, what in (("get", "secrets"), ("list", "secrets"), ("create", "pods/exec"),
                       ("create", "pods/attach"), ("patch", "pods/ephemeralcontainers"),
                       ("create", "pods"), ("patch", "deployments"),
                       ("update", "deployments"), ("patch", "replicasets"),
                       ("create", "pods/portforward")):
        assert not can(verb, what), f"{user} can {verb} {what}"
    init = {"spec": {"template": {"spec": {"initContainers": [{
        "name": "leak", "image": "busybox", "command": ["cat", "/etc/kameng/secrets/x"]}]}}}}
    out = kubectl("patch", "deployment", "storefront", "-n", ns, "--as", user,
                  "--type=strategic", "-p", json.dumps(init), check=False)
    assert out.returncode != 0
    assert "forbidden" in out.stderr


def test_foreign_pod_template_additions_are_removed(ready_site: str, kubectl: Any) -> None:
    """Someone with rights to the Deployment adds an init container, a volume, an env
    var and another service account: the operator puts its own template back."""
    ns = f"kameng-{ready_site}"
    patch = {"spec": {"template": {"spec": {
        "serviceAccountName": "default",
        "initContainers": [{"name": "leak", "image": "busybox",
                            "command": ["sh", "-c", "cat /etc/kameng/secrets/*/*"],
                            "volumeMounts": [{"name": "extra", "mountPath": "/x"}]}],
        "volumes": [{"name": "extra", "emptyDir": {}}],
        "containers": [{"name": "storefront",
                        "env": [{"name": "LEAK", "value": "1"}]}]}}}}
    kubectl("patch", "deployment", "storefront", "-n", ns, "--type=strategic",
            "-p", json.dumps(patch))

    def clean() -> bool:
        spec = get(kubectl, "deployment", "storefront", "-n", ns)["spec"]["template"]["spec"]
        env = [e["name"] for e in spec["containers"][0].get("env", [])]
        return ("initContainers" not in spec and spec["serviceAccountName"] == "storefront"
                and [v["name"] for v in spec["volumes"]].count("extra") == 0
                and "LEAK" not in env)

    wait_for(clean, 15, "foreign template additions removed")
    assert "ForeignChangesRemoved" in events_of(kubectl, ready_site)
    kubectl.wait_ready(f"subsite/{ready_site}", 20)


def test_one_domain_one_subsite(ready_site: str, kubectl: Any) -> None:
    later = "it-ten-dup"
    domain = get(kubectl, "subsite", ready_site)["spec"]["domain"]
    fresh_start(kubectl, later)
    try:
        apply_site(kubectl, later, domain=domain)
        conds = wait_reason(kubectl, later, "DomainConflict")
        assert ready_site in conds["Ready"]["message"]
        assert domain in conds["Ready"]["message"]
        wait_for(lambda: exists(kubectl, "configmap", "storefront-config", "-n",
                                f"kameng-{later}"), 15, "rest of the site provisioned")
        assert not exists(kubectl, "ingress", "storefront", "-n", f"kameng-{later}")
        # The holder keeps serving.
        assert conditions(kubectl, ready_site)["Ready"]["status"] == "True"
        kubectl("delete", "subsite", ready_site, "--wait=true", "--timeout=30s", timeout=60)
        wait_for(lambda: exists(kubectl, "ingress", "storefront", "-n", f"kameng-{later}"),
                 20, "the later SubSite gets its Ingress")
        kubectl.wait_ready(f"subsite/{later}", 20)
    finally:
        kubectl("delete", "subsite", later, "--ignore-not-found", "--wait=true", timeout=60)
        kubectl("delete", "license", later, "--ignore-not-found")
