"""What tests left in the dev environment: the things a later test (in the same run, or
the next run of a soak on the same environment) could trip over.

    eval "$(hack/devenv up)"; .venv/bin/python -m tests.support.leftovers

Prints one line per kind of leftover (nothing when the environment is as a fresh one plus
what the operator keeps by design) and exits 1 when there is any. `hack/soak` runs it
after every run and keeps the output beside the run's log.

Kept by design, never reported: the operator's own state in ``kameng-system`` (HQ keys,
the site-credential registry, the export key, its Lease), the CRDs, the default
namespaces, PostgreSQL's ``postgres`` database and admin role, Redis's ``default`` user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import redis

SYSTEM_NAMESPACES = {"default", "kube-node-lease", "kube-public", "kube-system",
                     "kameng-system"}
# Written by the operator in its own namespace and kept across its restarts on purpose.
OPERATOR_STATE = {"secret/kameng-hq-keys", "secret/kameng-site-credentials",
                  "secret/kameng-export-key", "configmap/kube-root-ca.crt",
                  "lease/kameng-operator"}
CUSTOM = ("subsites.kameng.io", "licenses.kameng.io", "rolepolicies.kameng.io",
          "riskpolicies.kameng.io", "clusterkopfpeerings.kopf.dev")
OUR_CRDS = {*CUSTOM[:4], "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def _kubectl(*args: str) -> Any:
    kubectl = str(Path(os.environ["KAMENG_BIN_DIR"]) / "kubectl")
    out = subprocess.run([kubectl, "--kubeconfig", os.environ["KUBECONFIG"], *args, "-o",
                          "json"], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def _names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["metadata"]["name"] for i in items)


def cluster() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for res in CUSTOM:
        out[res.split(".")[0]] = _names(_kubectl("get", res)["items"])
    out["namespaces"] = [n for n in _names(_kubectl("get", "namespaces")["items"])
                         if n not in SYSTEM_NAMESPACES]
    out["crds"] = [n for n in _names(_kubectl("get", "crds")["items"]) if n not in OUR_CRDS]
    items = _kubectl("get", "secrets,configmaps,leases,deployments,services",
                     "-n", "kameng-system")["items"]
    out["kameng-system"] = sorted(
        f"{i['kind'].lower()}/{i['metadata']['name']}" for i in items
        if f"{i['kind'].lower()}/{i['metadata']['name']}" not in OPERATOR_STATE)
    default = _kubectl("get", "secrets,configmaps,deployments,pods", "-n", "default")["items"]
    out["default"] = sorted(f"{i['kind'].lower()}/{i['metadata']['name']}" for i in default
                            if i["metadata"]["name"] != "kube-root-ca.crt")
    return out


def postgres() -> dict[str, list[str]]:
    with psycopg.connect(os.environ["KAMENG_PG_ADMIN_DSN"], connect_timeout=10) as conn:
        me = conn.execute("SELECT current_user").fetchone()
        dbs = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> "
            "'postgres' ORDER BY 1")]
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%%' AND rolname <> "
            "'postgres' AND rolname <> %s ORDER BY 1", (me[0] if me else "",))]
    return {"databases": dbs, "roles": roles}


def redis_state() -> dict[str, list[str]]:
    r = redis.Redis.from_url(os.environ["KAMENG_REDIS_URL"])
    try:
        users = sorted(u.decode() if isinstance(u, bytes) else str(u) for u in r.acl_users())
        prefixes: dict[str, int] = {}
        for key in r.scan_iter(count=1000):
            p = key.decode(errors="replace").split(":", 1)[0]
            prefixes[p] = prefixes.get(p, 0) + 1
    finally:
        r.close()
    return {"users": [u for u in users if u != "default"],
            "keys": [f"{p}:* ({n})" for p, n in sorted(prefixes.items())]}


def main() -> int:
    found = {**{f"cluster {k}": v for k, v in cluster().items()},
             **{f"postgres {k}": v for k, v in postgres().items()},
             **{f"redis {k}": v for k, v in redis_state().items()}}
    left = {k: v for k, v in found.items() if v}
    for what, names in left.items():
        print(f"{what}: {len(names)}: {', '.join(names[:30])}"
              f"{' ...' if len(names) > 30 else ''}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
