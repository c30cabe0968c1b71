"""Termination benchmark on the dev environment: how long the exit of a site with
100,000 orders takes, from `kubectl delete subsite` until the SubSite is gone (export to
the S3 server, reclaim, namespace removed), and the export alone (from the operator's
Exported status: pg_dump, CSV/JSON, pack, encrypt, multipart upload).

Rows are loaded with generate_series (COPY speed), never through HTTP.

Usage (with the dev env up: eval "$(hack/devenv up)"):
    python bench/exit_bench.py [--orders 100000] [--runs 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support import exit as ex  # noqa: E402
from tests.support.operator import OperatorProcess  # noqa: E402


def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(os.environ["KAMENG_BIN_DIR"]) / "kubectl"), *args],
                          input=input, text=True, capture_output=True, check=True, timeout=300)


def objects(name: str, rp: str) -> list[dict[str, Any]]:
    docs = [yaml.safe_load((ROOT / "manifests/samples" / f).read_text()) for f in
            ("license-demo.yaml", "rolepolicy-standard.yaml", "subsite-demo.yaml")]
    docs[0]["metadata"]["name"] = name
    docs[0]["spec"]["subSite"] = name
    docs[1]["metadata"]["name"] = rp
    docs[2]["metadata"]["name"] = name
    docs[2]["spec"].update(licenseRef=name, rolePolicyRef=rp, domain=f"{name}.bench.example",
                           database={"reclaimPolicy": "Delete"})
    return docs


def gone(*args: str) -> bool:
    return subprocess.run([str(Path(os.environ["KAMENG_BIN_DIR"]) / "kubectl"), "get", *args],
                          capture_output=True, check=False).returncode != 0


def one_run(orders: int, prefix: str) -> dict[str, float]:
    import base64
    name = f"bench-exit-{uuid.uuid4().hex[:5]}"
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects(name, "bench-exit-rp")))
    kubectl("wait", "--for=condition=Ready", f"subsite/{name}", "--timeout=60s")
    key = base64.b64decode(json.loads(kubectl(
        "get", "secret", f"kameng-keys-{name}", "-n", "kameng-system", "-o", "json").stdout
    )["data"]["data-key"]).decode()
    t0 = time.monotonic()
    asyncio.run(ex.fill_site(os.environ["KAMENG_PG_ADMIN_DSN"], name, key, orders=orders))
    fill = time.monotonic() - t0
    last: dict[str, Any] = {}
    t0 = time.monotonic()
    kubectl("delete", "subsite", name, "--wait=false")
    while not gone("subsite", name):
        st = subprocess.run([str(Path(os.environ["KAMENG_BIN_DIR"]) / "kubectl"), "get", "ss",
                             name, "-o", "json"], capture_output=True, text=True, check=False)
        if st.returncode == 0:
            last = json.loads(st.stdout).get("status", {}).get("export") or last
        assert time.monotonic() - t0 < 900, "termination did not finish in 15 minutes"
        time.sleep(0.2)
    total = time.monotonic() - t0
    while not gone("namespace", f"kameng-{name}"):
        time.sleep(0.2)
    ns_gone = time.monotonic() - t0
    kubectl("delete", "license", name, "--ignore-not-found")
    return {"orders": orders, "fill_s": round(fill, 2), "export_s": last.get("seconds", -1),
            "archive_mib": round(last.get("size", 0) / 2**20, 2),
            "termination_s": round(total, 2), "namespace_gone_s": round(ns_gone, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", "-", input=json.dumps(ex.store_secret(ex.s3_settings(prefix))))
    with tempfile.TemporaryDirectory() as tmp:
        op = OperatorProcess(os.environ["KUBECONFIG"], os.environ["KAMENG_PG_ADMIN_DSN"],
                             os.environ["KAMENG_REDIS_URL"], Path(tmp) / "operator.log").start()
        try:
            results = [one_run(args.orders, prefix) for _ in range(args.runs)]
        finally:
            op.stop()
            kubectl("delete", "secret", "kameng-export-store", "-n", "kameng-system",
                    "--ignore-not-found")
    for r in results:
        print(f"{r['orders']} orders: termination {r['termination_s']}s (export "
              f"{r['export_s']}s, archive {r['archive_mib']} MiB; namespace gone after "
              f"{r['namespace_gone_s']}s; loading the rows took {r['fill_s']}s)")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
