"""The image `make image` builds, run from its own unpacked root filesystem (chroot, as
uid 10001, nothing of this machine's Python): its config, every component's entry point,
every module importable, the package data complete, and the operator and both workers
doing real work against the dev environment. A file or dependency missing from the image
fails here, not in a user's cluster.

Built on demand: by `make image` (CI runs it first), or here when build/image/ is missing
or was built from another tree (hack/image --source-hash)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from kameng.contracts.events import OrderEvent
from tests.support.ledger import event, license_obj, record_payment, setup_ledger
from tests.support.operator import OperatorProcess, batch_objects
from tests.support.risk import decision_row, hq_database
from tests.support.storefront import temp_database
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "image"
UID = "10001:10001"
PATH = "/opt/kameng/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The compressed layer's size today is ~134 MB; a budget that catches a careless addition
# (a second Python, build tools, a cache) without failing on a dependency's growth.
MAX_COMPRESSED = 170_000_000


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.fail("the image's smoke test runs its root filesystem with chroot: run as root "
                    "(CI does)")
    want = subprocess.run([str(ROOT / "hack" / "image"), "--source-hash"], check=True,
                          capture_output=True, text=True).stdout.strip()
    info = OUT / "image.json"
    if not info.exists() or json.loads(info.read_text()).get("source") != want:
        subprocess.run([str(ROOT / "hack" / "image")], check=True, timeout=1800,
                       stdout=subprocess.DEVNULL)
    got = json.loads(info.read_text())
    assert got["source"] == want
    return got


@pytest.fixture
def scratch(image: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """A directory inside the image's root the uid 10001 may write: (host path, path as
    the image sees it)."""
    name = f"kameng-smoke-{uuid.uuid4().hex[:8]}"
    host = OUT / "rootfs" / "tmp" / name
    host.mkdir()
    os.chown(host, 10001, 10001)
    try:
        yield host, f"/tmp/{name}"
    finally:
        shutil.rmtree(host, ignore_errors=True)


def in_image(*argv: str, env: dict[str, str] | None = None) -> list[str]:
    """``argv`` run inside the image as uid 10001 with nothing but ``env`` (and PATH)."""
    pairs = [f"{k}={v}" for k, v in {"PATH": PATH, "HOME": "/nonexistent",
                                     "LANG": "C.UTF-8", **(env or {})}.items()]
    return ["chroot", f"--userspec={UID}", str(OUT / "rootfs"), "/usr/bin/env", "-i", *pairs,
            *argv]


def run_in_image(*argv: str, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(in_image(*argv, env=env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _skopeo_config(ref: str) -> dict[str, Any]:
    out = subprocess.run(["skopeo", "inspect", "--config", ref], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return dict(json.loads(out)["config"])


def test_both_archives_hold_the_image_with_its_config(image: dict[str, Any]) -> None:
    version = image["version"]
    oci = _skopeo_config(f"oci-archive:{ROOT / image['archive']}:{version}")
    docker = _skopeo_config(f"docker-archive:{ROOT / image['docker_archive']}")
    for cfg in (oci, docker):
        assert cfg["User"] == UID  # the pods' runAsUser/runAsGroup
        assert cfg["Entrypoint"] == ["/opt/kameng/bin/kameng"]
        assert cfg["Cmd"] == ["operator", "--standalone"]
        assert cfg["Labels"]["org.opencontainers.image.version"] == version
    assert oci["Env"] == docker["Env"]
    # The docker-archive carries the chart's image name: `kind load image-archive` gives
    # the cluster what the chart pulls.
    chart = yaml.safe_load((ROOT / "charts" / "kameng" / "values.yaml").read_text())["image"]
    with tarfile.open(ROOT / image["docker_archive"]) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [f"{chart['repository']}:{version}"]
    raw = subprocess.run(["skopeo", "inspect", "--raw",
                          f"oci-archive:{ROOT / image['archive']}:{version}"],
                         check=True, capture_output=True, timeout=120).stdout
    import hashlib
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["manifest_digest"]
    print(f"image: {image['compressed_bytes'] / 1e6:.1f} MB compressed, "
          f"{image['unpacked_bytes'] / 1e6:.1f} MB unpacked, {image['manifest_digest']}")
    assert image["compressed_bytes"] < MAX_COMPRESSED


def test_every_entry_point_and_module_runs_as_10001(image: dict[str, Any]) -> None:
    for argv in (["kameng", "--help"], ["kameng", "operator", "--help"],
                 ["kameng", "storefront", "--help"], ["kameng", "risk", "--help"],
                 ["kameng", "settlement", "--help"], ["kameng", "ledger", "--help"],
                 ["kubectl-kameng", "--help"]):
        out = run_in_image(*argv)
        assert out.returncode == 0, (argv, out.stderr[-2000:])
        assert "usage:" in out.stdout, argv
    # pg_dump/pg_restore: the exit archives and database moves shell out to them.
    for tool in ("pg_dump", "pg_restore"):
        out = run_in_image(tool, "--version")
        assert out.returncode == 0, out.stderr
        assert "PostgreSQL" in out.stdout
    # Every module of both packages imports: a dependency used by one lazily imported
    # module (boto3 for the exit store, say) is in the image too.
    probe = ("import importlib, pkgutil, kameng, kameng_storefront\n"
             "n = 0\n"
             "for pkg in (kameng, kameng_storefront):\n"
             "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
             "        importlib.import_module(m.name); n += 1\n"
             "print(n)")
    out = run_in_image("python3", "-c", probe)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout) > 100


def test_package_data_is_the_source_trees(image: dict[str, Any]) -> None:
    """Templates, locales and migrations: exactly the files of the tree (a
    pattern missing from package-data would ship pages that fail at their first
    request)."""
    site = next((OUT / "rootfs" / "opt" / "kameng" / "lib").glob("python3*/site-packages"))
    for pkg, src, parts in (("kameng_storefront", "storefront",
                             ("templates", "locales", "migrations")),
                            ("kameng", "operator", ("ledger/migrations",))):
        for part in parts:
            want = {p.relative_to(ROOT / src / part) for p in (ROOT / src / part).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts}
            got = {p.relative_to(site / pkg / part) for p in (site / pkg / part).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts}
            assert want, (src, part)
            assert got == want, (pkg, part, sorted(want - got)[:5], sorted(got - want)[:5])


def _kubeconfig_for_image(kubeconfig: str, dest: Path) -> None:
    """The dev environment's kubeconfig with its CA inline (the image cannot see the
    host's files)."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    for c in cfg["clusters"]:
        ca = c["cluster"].pop("certificate-authority", None)
        if ca:
            c["cluster"]["certificate-authority-data"] = base64.b64encode(
                Path(ca).read_bytes()).decode()
    dest.write_text(yaml.safe_dump(cfg))
    os.chown(dest, 10001, 10001)


def test_operator_from_the_image_builds_and_reclaims_a_site(
        image: dict[str, Any], scratch: tuple[Path, str], devenv: dict[str, str],
        kubectl: Any) -> None:
    host, inside = scratch
    _kubeconfig_for_image(devenv["kubeconfig"], host / "kubeconfig")
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         host / "operator.log")
    # Its own command line: the image's kameng, the image's kubeconfig and export dir;
    # the lease check beside it keeps reading the host's kubeconfig.
    flags = op.args[op.args.index("operator") + 1:]
    op.args = in_image("kameng", "operator", *flags, env={
        "KUBECONFIG": f"{inside}/kubeconfig", "KAMENG_PG_ADMIN_DSN": devenv["pg_admin_dsn"],
        "KAMENG_REDIS_URL": devenv["redis_url"], "KAMENG_EXPORT_DIR": f"{inside}/exports",
        "POD_NAME": os.uname().nodename})
    rp, lic, ss = batch_objects("it-image", 1)
    name = ss["metadata"]["name"]
    op.start()
    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([rp, lic, ss]))
        deadline = time.monotonic() + 180
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads(kubectl("get", "subsite", name, "-o", "json").stdout
                                ).get("status") or {}
            if status.get("phase") == "Ready":
                break
            time.sleep(1)
        assert status.get("phase") == "Ready", (status, op.log_tail(40))
        # Deleted: its finalizer runs in the image too, pg_dump included: the exit
        # archive of the site's data is written where the image was told to.
        kubectl("delete", "subsite", name, "--wait=true", "--timeout=150s", timeout=180)
        archives = [p for p in (host / "exports").rglob("*") if p.is_file()]
        assert any(name in str(p) for p in archives), (archives, op.log_tail(40))
    finally:
        op.stop()
        kubectl("delete", "subsite", name, "--ignore-not-found", "--wait=false")
        kubectl("delete", "license", name, "--ignore-not-found")
        kubectl("delete", "rolepolicy", rp["metadata"]["name"], "--ignore-not-found")
    assert "Traceback" not in (host / "operator.log").read_text()


def _worker(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    try:
        return subprocess.Popen(in_image(*argv, env=env), stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _until(pred: Any, timeout: float, what: str, log: Path) -> None:
    try:
        wait_for(pred, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log: {log.read_text()[-2000:]}") from None


def test_risk_worker_from_the_image_decides_an_order(
        image: dict[str, Any], scratch: tuple[Path, str], pg_admin_dsn: str,
        redis_url: str) -> None:
    host, inside = scratch
    tag = uuid.uuid4().hex[:8]
    site, prefix = f"img{tag}", f"ktest:{tag}:orders:"
    shutil.copy(ROOT / "manifests" / "samples" / "riskpolicy-default.yaml", host / "p.yaml")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ev = OrderEvent.for_order("order.paid", site=site, order_id=f"o{tag}",
                              customer=f"c{tag}", amount=1500)
    with hq_database(pg_admin_dsn) as dsn:
        proc = _worker(["kameng", "risk", "run", "--no-kube", "--metrics-port", "0",
                        "--policy-file", f"{inside}/p.yaml", "--prefix", prefix],
                       {"KAMENG_REDIS_URL": redis_url, "KAMENG_HQ_DATABASE_URL": dsn},
                       host / "risk.log")
        try:
            r.xadd(prefix + site, ev.to_fields())
            _until(lambda: decision_row(dsn, ev.event_id) is not None, 60,
                   "the decision of the order", host / "risk.log")
            row = decision_row(dsn, ev.event_id)
        finally:
            _stop(proc)
            for key in r.scan_iter(match=f"ktest:{tag}:*"):
                r.delete(key)
    assert row is not None
    # An ordinary order under the default policy: decided, every feature counted.
    assert (row["action"], row["site"], row["amount"]) == ("allow", site, 1500)
    assert row["features"]["default"]["paid-count-customer-10m"] == 1
    assert "Traceback" not in (host / "risk.log").read_text()


def test_settlement_worker_from_the_image_posts_a_sale(
        image: dict[str, Any], scratch: tuple[Path, str], pg_admin_dsn: str,
        redis_url: str, devenv: dict[str, str], kubectl: Any) -> None:
    host, inside = scratch
    _kubeconfig_for_image(devenv["kubeconfig"], host / "kubeconfig")
    tag = uuid.uuid4().hex[:6]
    site, prefix = f"img-{tag}", f"ktest:{tag}:orders:"
    kubectl("apply", "-f", "-", input=json.dumps(
        {**license_obj(site), "metadata": {"name": site}}))
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with temp_database(pg_admin_dsn, "imgledger") as dsn:
        asyncio.run(setup_ledger(dsn))
        asyncio.run(record_payment(dsn, site, "O1", 12_300))

        def posted() -> int:
            with psycopg.connect(dsn) as conn:
                return int(conn.execute("SELECT count(*) FROM ledger.entries WHERE kind ="
                                        " 'sale'").fetchone()[0])

        proc = _worker(["kameng", "settlement", "--dsn", dsn, "--redis", redis_url,
                        "--kubeconfig", f"{inside}/kubeconfig", "--stream-prefix", prefix,
                        "--interval", "1", "--metrics-port", "0"], {}, host / "settle.log")
        try:
            r.xadd(prefix + site, event("order.paid", site, "O1", 12_300))
            _until(lambda: posted() == 1, 60, "the sale in the ledger", host / "settle.log")
        finally:
            _stop(proc)
            for key in r.scan_iter(match=f"ktest:{tag}:*"):
                r.delete(key)
            kubectl("delete", "license", site, "--ignore-not-found", "--wait=false")
        out = run_in_image("kameng", "ledger", "verify", "--dsn", dsn)
        assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in (host / "settle.log").read_text()
