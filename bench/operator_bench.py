"""Operator benchmark on the dev environment.

N SubSites (with their Licenses and one RolePolicy) are created at once; measured:
* time until all are Ready (every storefront Deployment Available on kwok nodes);
* API writes the operator made (its own client-side counter, exact, plus kopf's
  bookkeeping PATCHes of the SubSites read from the API server) and, for context,
  write requests the API server counted for the resource kinds the operator manages
  (``apiserver_request_total``; it has no user label, so it includes
  kube-controller-manager's writes such as each namespace's ``default`` ServiceAccount
  and ``kube-root-ca.crt`` ConfigMap);
* operator peak memory (VmHWM);
* API writes during an idle window after convergence (target 0);
* the denominator: the same child objects created by a tight raw client loop (one POST
  each, no reads, no comparison), timed and counted.

Usage: python bench/operator_bench.py [--count 100] [--idle 60] [--keep]
Prints the figures; ``--json`` prints them as JSON too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kameng.api.common import API_VERSION  # noqa: E402
from kameng.api.kinds import CHILDREN, resource  # noqa: E402
from kameng.api.resources import SUBSITE  # noqa: E402
from kameng.api.subsite import SubSiteSpec  # noqa: E402
from kameng.children.build import build_children  # noqa: E402
from kameng.children.context import SiteContext, SiteSecrets  # noqa: E402
from kameng.cli.memory_profile import ENV as MEMORY_PROFILE_ENV  # noqa: E402
from kameng.kube.client import Kube, path_for  # noqa: E402
from tests.support.operator import OperatorProcess, batch_objects, subsite_spec  # noqa: E402

MANAGED = {*(r.plural for r in CHILDREN), SUBSITE.plural, resource("Event").plural}
WRITE_VERBS = {"POST", "PATCH", "PUT", "DELETE", "APPLY", "CREATE", "UPDATE"}
METRIC_RE = re.compile(r'^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$', re.M)


def devenv() -> dict[str, str]:
    out = subprocess.run([str(ROOT / "hack" / "devenv"), "up"], check=True,
                         capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            env[k] = shlex.split(v)[0] if k != "PATH" else v
    return env


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def cpu_seconds(devenv_dir: str, operator_pid: int | None) -> dict[str, float]:
    """CPU time (user + system) so far of this dev environment's control-plane processes
    (their command lines name its directory) and of the operator: where a batch's time
    goes, since the machine is shared and the wall clock alone cannot say."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = Path(argv[0].decode(errors="replace")).name
        if int(proc.name) == operator_pid:
            name = "operator"
        elif name not in CONTROL_PLANE or devenv_dir.encode() not in b" ".join(argv):
            continue
        out[name] = out.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in sorted(after)}


async def raw_available(kube: Kube, prefix: str, n: int, within: float) -> bool:
    """Whether all n Deployments of the raw loop became Available: the raw loop stops
    at its last POST, the operator's clock at its last site Ready, which also waits for
    kube-controller-manager, the scheduler and kwok to roll out every Deployment."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        deps = [d for d in await kube.list(path_for("apps/v1", "Deployment"))
                if d["metadata"].get("namespace", "").startswith(f"kameng-{prefix}-")]
        if len(deps) >= n and all(
                (d.get("status") or {}).get("availableReplicas", 0) >= d["spec"]["replicas"]
                for d in deps):
            return True
        await asyncio.sleep(2.0)
    return False


def write_breakdown(kubectl: list[str]) -> dict[str, float]:
    """Write requests to the managed kinds by verb/resource/subresource, all clients."""
    text = subprocess.run([*kubectl, "get", "--raw", "/metrics"], check=True,
                          capture_output=True, text=True).stdout
    out: dict[str, float] = {}
    for labels, value in METRIC_RE.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("verb") in WRITE_VERBS and lab.get("resource") in MANAGED:
            key = f'{lab["verb"]} {lab["resource"]}' + (
                f'/{lab["subresource"]}' if lab.get("subresource") else "")
            out[key] = out.get(key, 0.0) + float(value)
    return out


def apiserver_writes(kubectl: list[str]) -> tuple[float, float]:
    """(write requests to the managed kinds by all clients, PATCHes of SubSites' main
    resource — in this benchmark only kopf's finalizer/annotation bookkeeping, which the
    operator's own counter does not see)."""
    text = subprocess.run([*kubectl, "get", "--raw", "/metrics"], check=True,
                          capture_output=True, text=True).stdout
    total = kopf = 0.0
    for labels, value in METRIC_RE.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("verb") in WRITE_VERBS and lab.get("resource") in MANAGED:
            total += float(value)
            if lab.get("resource") == "subsites" and lab.get("verb") == "PATCH" \
                    and not lab.get("subresource"):
                kopf += float(value)
    return total, kopf


def partial(fig: dict[str, Any]) -> None:
    """The figures so far: a run that fails later (a timeout at 1,000 sites on a loaded
    machine) still reports what it measured."""
    print("partial:", json.dumps(fig), flush=True)


def apf_rejected(kubectl: list[str]) -> int:
    """Requests API Priority and Fairness rejected so far, all levels (0 = the operator
    never met the server's limit)."""
    text = subprocess.run([*kubectl, "get", "--raw", "/metrics"], check=True,
                          capture_output=True, text=True).stdout
    return int(sum(float(v) for v in re.findall(
        r'^apiserver_flowcontrol_rejected_requests_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)))


async def create_all(kube: Kube, docs: list[dict[str, Any]], parallel: int = 50) -> None:
    sem = asyncio.Semaphore(parallel)

    async def one(doc: dict[str, Any]) -> None:
        async with sem:
            await kube.create(path_for(doc["apiVersion"], doc["kind"]), doc)

    await one(docs[0])
    # Every create finishes before an error is raised: cleanup then sees all of them.
    results = await asyncio.gather(*(one(d) for d in docs[1:]), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} creates failed, first: {errors[0]}")


async def count_ready(kube: Kube, prefix: str) -> int:
    items = await kube.list(path_for(API_VERSION, "SubSite"))
    return sum(1 for o in items if o["metadata"]["name"].startswith(prefix + "-")
               and o.get("status", {}).get("phase") == "Ready")


async def _ready(kube: Kube, name: str) -> bool:
    obj = await kube.get(path_for(API_VERSION, "SubSite", name), kind="SubSite")
    return ((obj or {}).get("status") or {}).get("phase") == "Ready"


async def raw_loop(kube: Kube, prefix: str, n: int) -> tuple[int, float]:
    """The same children, created one POST at a time: the floor any controller pays."""
    created, started = 0, time.monotonic()
    for i in range(n):
        name = f"{prefix}-{i:04d}"
        ctx = SiteContext(name=name, uid="00000000-0000-0000-0000-000000000000",
                          spec=SubSiteSpec.model_validate(subsite_spec(name, prefix)),
                          secrets=SiteSecrets(db_dsn="x", redis_url="x", session_secret="x",
                                              data_key="x", license_token="x"))
        for obj in build_children(ctx):
            md = obj["metadata"]
            md.pop("ownerReferences", None)  # no SubSite owns these
            md["labels"]["app.kubernetes.io/managed-by"] = "kameng-bench-raw"
            ns = md.get("namespace")
            await kube.create(path_for(obj["apiVersion"], obj["kind"], namespace=ns), obj)
            created += 1
    return created, time.monotonic() - started


async def delete_prefix(kube: Kube, kind: str, api_version: str, prefix: str) -> None:
    for o in await kube.list(path_for(api_version, kind)):
        if o["metadata"]["name"].startswith(prefix):
            await kube.delete(path_for(api_version, kind, o["metadata"]["name"]), kind=kind)


async def wait_gone(kube: Kube, kind: str, api_version: str, prefix: str,
                    within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [o for o in await kube.list(path_for(api_version, kind))
                if o["metadata"]["name"].startswith(prefix)]
        if not left:
            return True
        for o in left:
            if not o["metadata"].get("deletionTimestamp"):
                await kube.delete(path_for(api_version, kind, o["metadata"]["name"]), kind=kind)
        await asyncio.sleep(2)
    return False


def memory_report(op: OperatorProcess, path: str) -> str:
    """The operator's live allocations by owning code (``kameng.cli.memory_profile``),
    asked for with SIGUSR2 once the batch has converged."""
    Path(path).unlink(missing_ok=True)
    assert op.proc is not None
    op.proc.send_signal(signal.SIGUSR2)
    for _ in range(600):  # a snapshot of ~1M blocks takes a while
        if Path(path).exists():
            return Path(path).read_text()
        time.sleep(0.5)
    return "(no report within 300 s)"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = devenv()
    kubectl = [str(Path(env["KAMENG_BIN_DIR"]) / "kubectl"), "--kubeconfig", env["KUBECONFIG"]]
    kube = Kube.from_environment(env["KUBECONFIG"])
    # A fresh prefix per run: namespaces of an earlier run may still be terminating.
    run_id = f"{int(time.time()) % 100000:05d}"
    prefix = f"b{args.count}r{run_id}"
    log_path = Path(tempfile.gettempdir()) / f"kameng-operator-bench-{args.count}.log"
    profile_env = {MEMORY_PROFILE_ENV: args.memory_profile} if args.memory_profile else {}
    op = OperatorProcess(env["KUBECONFIG"], env["KAMENG_PG_ADMIN_DSN"],
                         env["KAMENG_REDIS_URL"], log_path,
                         extra_args=("--workers", str(args.workers)),
                         extra_env=profile_env).start(wait=180)
    fig: dict[str, Any] = {"subsites": args.count}
    try:
        await asyncio.sleep(2)
        op_w0, (api_w0, kopf_w0) = op.api_writes(), apiserver_writes(kubectl)
        devenv_dir = env["KAMENG_DEVENV_DIR"]
        op_pid = op.proc.pid if op.proc else None
        cpu0 = cpu_seconds(devenv_dir, op_pid)
        started = time.monotonic()
        await create_all(kube, batch_objects(prefix, args.count))
        fig["create_seconds"] = round(time.monotonic() - started, 2)
        ready = 0
        while ready < args.count:
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"only {ready}/{args.count} Ready after {args.timeout}s; "
                                 f"operator log: {log_path}")
            # A LIST of every SubSite per poll: at 1,000 sites ~4 MB the API server
            # serialises each time, load the operator would be measured under; polled
            # less often at scale (the figure's resolution stays under 1 %).
            await asyncio.sleep(0.5 if args.count <= 200 else 2.0)
            ready = await count_ready(kube, prefix)
        fig["seconds_until_all_ready"] = round(time.monotonic() - started, 2)
        fig["cpu_seconds_during_batch"] = cpu_delta(cpu0, cpu_seconds(devenv_dir, op_pid))
        api_w1, kopf_w1 = apiserver_writes(kubectl)
        fig["operator_writes_until_ready"] = int(op.api_writes() - op_w0 + kopf_w1 - kopf_w0)
        fig["of_which_kopf_bookkeeping"] = int(kopf_w1 - kopf_w0)
        fig["apiserver_writes_managed_kinds_all_clients"] = int(api_w1 - api_w0)
        fig["operator_peak_rss_mib"] = round(op.rss_bytes() / 2**20, 1)
        fig["apf_rejected_during_batch"] = apf_rejected(kubectl)
        fig["operator_writes_per_subsite_by_kind"] = {
            f"{verb} {kind}": round(float(v) / args.count, 2)
            for kind, verb, v in re.findall(
                r'^kameng_api_writes_total\{kind="([^"]*)",verb="([^"]*)"\} ([0-9.e+]+)$',
                op.metrics(), re.M)}

        partial(fig)
        await asyncio.sleep(5)  # the last Deployment status events settle
        op_i0, (api_i0, _) = op.api_writes(), apiserver_writes(kubectl)
        by_kind0, op_kind0 = write_breakdown(kubectl), op.writes_by_kind()
        await asyncio.sleep(args.idle)
        fig["idle_seconds"] = args.idle
        fig["operator_writes_while_idle"] = int(op.api_writes() - op_i0)
        # By kind, from the operator's own counter: what it still writes, and so why.
        fig["operator_idle_writes_by_kind"] = {
            k: int(v - op_kind0.get(k, 0.0)) for k, v in op.writes_by_kind().items()
            if v - op_kind0.get(k, 0.0) > 0}
        fig["apiserver_writes_managed_kinds_while_idle"] = int(
            apiserver_writes(kubectl)[0] - api_i0)
        by_kind1 = write_breakdown(kubectl)
        # Who wrote while the operator was idle (kube-controller-manager's Events, quota
        # status…): the apiserver cannot say by whom, only what.
        fig["apiserver_idle_writes_by_kind"] = {
            k: int(v - by_kind0.get(k, 0.0)) for k, v in by_kind1.items()
            if v - by_kind0.get(k, 0.0) > 0}
        fig["operator_peak_rss_mib"] = round(op.rss_bytes() / 2**20, 1)
        fig["operator_rss_after_idle_mib"] = round(op.current_rss_bytes() / 2**20, 1)
        if args.memory_profile:
            fig["memory_profile"] = await asyncio.to_thread(memory_report, op,
                                                            args.memory_profile)
        partial(fig)

        # One more SubSite at a time while the others exist: apply → Ready latency.
        lat = []
        for i in range(args.singles):
            docs = batch_objects(f"{prefix}s{i}", 1)
            docs[2]["spec"]["rolePolicyRef"] = f"{prefix}-rp"
            t0 = time.monotonic()
            await create_all(kube, docs[1:])
            # One GET of the one SubSite, not a LIST of all (10 LISTs of 1,000 SubSites
            # a second loaded the API server the latency is measured against).
            while not await _ready(kube, f"{prefix}s{i}-0000"):
                if time.monotonic() - t0 > args.timeout:
                    raise SystemExit(f"single SubSite not Ready after {args.timeout}s")
                await asyncio.sleep(0.1)
            lat.append(time.monotonic() - t0)
        lat.sort()
        if lat:
            fig["single_apply_to_ready_p50_s"] = round(lat[len(lat) // 2], 2)
            fig["single_apply_to_ready_p99_s"] = round(
                lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2)

        partial(fig)
        # Random spec edits (replicas, title) converge: every edited site Ready again at
        # its new generation.
        rng = random.Random(args.count)
        t0 = time.monotonic()
        edited = {}
        for i in range(args.edits):
            name = f"{prefix}-{rng.randrange(args.count):04d}"
            edited[name] = await kube.merge_patch(
                path_for(API_VERSION, "SubSite", name),
                {"spec": {"branding": {"title": f"edit {i}"},
                          "storefront": {"replicas": rng.choice([1, 2])}}}, kind="SubSite")
        while True:
            items = {o["metadata"]["name"]: o for o in
                     await kube.list(path_for(API_VERSION, "SubSite"))}
            if all((items[n].get("status") or {}).get("observedGeneration")
                   == items[n]["metadata"]["generation"]
                   and items[n]["status"].get("phase") == "Ready" for n in edited):
                break
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit("edits did not converge")
            await asyncio.sleep(0.5)
        fig["random_edits"] = args.edits
        fig["random_edits_converged_s"] = round(time.monotonic() - t0, 2)
        fig["operator_peak_rss_mib"] = round(op.rss_bytes() / 2**20, 1)
        partial(fig)

        raw_prefix = f"x{args.count}r{run_id}"
        cpu0 = cpu_seconds(devenv_dir, op_pid)
        raw_started = time.monotonic()
        raw_n, raw_s = await raw_loop(kube, raw_prefix, args.count)
        fig["raw_loop_objects"] = raw_n
        fig["raw_loop_seconds"] = round(raw_s, 2)
        fig["cpu_seconds_during_raw_loop"] = cpu_delta(cpu0, cpu_seconds(devenv_dir, op_pid))
        if await raw_available(kube, raw_prefix, args.count, args.timeout):
            fig["raw_loop_until_deployments_available_s"] = round(
                time.monotonic() - raw_started, 2)
            fig["ready_time_ratio_to_raw_loop_until_available"] = round(
                fig["seconds_until_all_ready"]
                / fig["raw_loop_until_deployments_available_s"], 2)
        fig["writes_ratio_operator_to_raw"] = round(
            fig["operator_writes_until_ready"] / raw_n, 2)
        fig["ready_time_ratio_to_raw_loop"] = round(
            fig["seconds_until_all_ready"] / max(raw_s, 1e-6), 2)
        fig["operator_writes_per_subsite"] = round(
            fig["operator_writes_until_ready"] / args.count, 1)
        await delete_prefix(kube, "Namespace", "v1", f"kameng-{raw_prefix}-")
    finally:
        try:
            if not args.keep:
                # The batch is `prefix-NNNN`, the single ones `prefixsN-0000`.
                await delete_prefix(kube, "SubSite", API_VERSION, prefix)
                fig["cleanup_complete"] = await wait_gone(
                    kube, "SubSite", API_VERSION, prefix, args.timeout)
                await delete_prefix(kube, "License", API_VERSION, prefix)
                await delete_prefix(kube, "RolePolicy", API_VERSION, prefix + "-")
        finally:  # a failed cleanup must not leave the operator running
            op.stop()
            await kube.close()
    return fig


def table(fig: dict[str, Any]) -> str:
    """The issue's rows, measured in this run, next to their targets."""
    n = fig["subsites"]
    rows = [
        (f"{n} SubSites → all Ready",
         f"{fig['seconds_until_all_ready']} s; raw POST loop {fig['raw_loop_seconds']} s "
         f"({fig['ready_time_ratio_to_raw_loop']}×); the raw loop until its Deployments "
         f"are Available {fig.get('raw_loop_until_deployments_available_s')} s "
         f"({fig.get('ready_time_ratio_to_raw_loop_until_available')}×)",
         "≤ 1.3× the raw loop"),
        ("operator API writes per SubSite until Ready",
         f"{fig['operator_writes_per_subsite']} ({fig['raw_loop_objects'] // n} objects)",
         "≤ 18"),
        ("operator writes in an idle window",
         f"{fig['operator_writes_while_idle']} in {fig['idle_seconds']:.0f} s", "0"),
        (f"operator memory at {n} sites", f"{fig['operator_peak_rss_mib']} MiB (peak RSS)",
         "≤ 200 MiB"),
        ("one SubSite apply → Ready",
         f"p50 {fig.get('single_apply_to_ready_p50_s')} s, "
         f"p99 {fig.get('single_apply_to_ready_p99_s')} s", "p50 ≤ 2 s, p99 ≤ 5 s"),
        (f"{fig.get('random_edits')} random spec edits converge",
         f"{fig.get('random_edits_converged_s')} s", "(converge)"),
    ]
    out = ["| | measured | target |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--singles", type=int, default=20,
                   help="SubSites applied one at a time after the batch (latency)")
    p.add_argument("--edits", type=int, default=100, help="random spec edits after the batch")
    p.add_argument("--keep", action="store_true", help="leave the SubSites in place")
    p.add_argument("--json", action="store_true")
    p.add_argument("--memory-profile", metavar="FILE", default="",
                   help="trace the operator's allocations (kameng.cli.memory_profile) and "
                   "write where its memory goes once the batch converged; tracing slows it, "
                   "so this run's times are not comparable")
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    fig = asyncio.run(main_async(args))
    width = max(len(k) for k in fig)
    for k, v in fig.items():
        print(f"{k:<{width}}  {v}")
    print()
    print(table(fig))
    if args.json:
        print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
