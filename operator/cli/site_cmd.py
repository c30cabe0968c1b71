"""`kameng site export|restore` and the `kubectl kameng export-data|terminate` verbs: the
exit of a site, by hand.

``export`` makes the same archive the operator makes when a SubSite is deleted, without
deleting anything (the shop keeps running: the snapshot is consistent regardless).
``restore`` loads an archive into a fresh site: it checks everything first (decryption,
the manifest's signature, every file's SHA-256) and refuses a tampered archive; then it
loads the dump, proves the tables equal the archive's, and gives the site the archive's
data key, so delivered card keys stay decryptable.

Both need the PostgreSQL admin DSN (``KAMENG_PG_ADMIN_DSN``) and a kubeconfig with HQ's
rights in the operator's namespace (HQ's keys and the export store Secret).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kameng.api.common import API_VERSION
from kameng.api.kinds import WAIVE_EXPORT_ANNOTATION
from kameng.api.resources import SUBSITE
from kameng.children.context import namespace_name
from kameng.contracts import pod
from kameng.controller import hqkeys, keyvault
from kameng.controller.config import OperatorConfig
from kameng.exit import keys as exit_keys
from kameng.exit import restore as rs
from kameng.exit.envelope import EnvelopeError
from kameng.exit.export import ExportFailed
from kameng.exit.manifest import ArchiveInvalid
from kameng.exit.runner import load_store, run_export
from kameng.exit.store import FileStore, StoreUnavailable, decode_secret, for_location
from kameng.kube.client import Kube, KubeError, path_for

NS_DEFAULT = os.environ.get("KAMENG_NAMESPACE", "kameng-system")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", default=NS_DEFAULT,
                   help="the operator's namespace (HQ keys, export store Secret)")
    p.add_argument("--dsn", default=os.environ.get("KAMENG_PG_ADMIN_DSN", ""),
                   help="PostgreSQL admin DSN (default: $KAMENG_PG_ADMIN_DSN)")
    p.add_argument("--store-secret", default=OperatorConfig.export_store_secret,
                   help="Secret describing the S3 store (absent: a directory)")


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("site")
    p.add_argument("--to", help="write into this directory instead of the configured store")
    p.add_argument("--hq-dsn", default=os.environ.get("KAMENG_HQ_DATABASE_URL", ""),
                   help="HQ's database, for the site's statements (read-only)")
    _common(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="site_verb", required=True)
    e = sub.add_parser("export", help="export a site's data for HQ without terminating it")
    add_export_args(e)
    r = sub.add_parser("restore", help="load an exit archive into a fresh site")
    r.add_argument("archive", help="s3://bucket/key, file:// URL or a path")
    r.add_argument("--site", help="the site to load into (default: the archive's); its "
                   "SubSite must exist and hold no orders, customers or staff yet")
    r.add_argument("--key-file", help="HQ's export private key (base64), if it is kept "
                   "outside the cluster")
    r.add_argument("--verify-only", action="store_true",
                   help="decrypt and check the archive, load nothing")
    _common(r)


async def _export(args: argparse.Namespace) -> dict[str, Any]:
    if not args.dsn:
        raise SystemExit("kameng site export: --dsn or KAMENG_PG_ADMIN_DSN is required")
    kube = Kube.from_environment()
    try:
        body = await kube.get(path_for(API_VERSION, SUBSITE.kind, args.site), kind=SUBSITE.kind)
        if body is None:
            raise SystemExit(f"SubSite {args.site} not found")
        store = FileStore(Path(args.to)) if args.to else await load_store(
            kube, args.namespace, args.store_secret, OperatorConfig.export_dir)
        saved = await keyvault.load(kube, args.namespace, args.site)
        hq = await hqkeys.load_or_create(kube, args.namespace, OperatorConfig.hq_keys_secret)
        result = await run_export(kube, namespace=args.namespace, body=body,
                                  admin_dsn=args.dsn, hq_dsn=args.hq_dsn or None, store=store,
                                  data_keys=saved.data_key if saved else "",
                                  signing_key=hq.signing_key, reason="on-demand")
    finally:
        await kube.close()
    return {"location": result.location, "sha256": result.sha256, "size": result.size,
            "rows": result.rows, "seconds": round(result.seconds, 3)}


async def _set_data_key(kube: Kube, namespace: str, site: str, ring: str) -> None:
    """The restored site decrypts with the archive's key: its key copy and its Secret
    both get it (the site held no data encrypted with its own key: restore checked)."""
    enc = base64.b64encode(ring.encode()).decode()
    await kube.merge_patch(path_for("v1", "Secret", keyvault.backup_name(site), namespace),
                           {"data": {keyvault.DATA_KEY: enc}}, kind="Secret")
    secret = path_for("v1", "Secret", pod.DATA_KEYS.secret, namespace_name(site))
    if await kube.get(secret, kind="Secret") is not None:
        await kube.merge_patch(secret, {"data": {pod.DATA_KEYS.key: enc}}, kind="Secret")


async def _restore(args: argparse.Namespace) -> dict[str, Any]:
    kube = Kube.from_environment()
    try:
        private = (args.key_material if args.key_file
                   else await exit_keys.private_key(kube, args.namespace))
        hq = await hqkeys.load_or_create(kube, args.namespace, OperatorConfig.hq_keys_secret)
        store_obj = await kube.get(path_for("v1", "Secret", args.store_secret, args.namespace),
                                   kind="Secret")
        settings = decode_secret((store_obj or {}).get("data"))
        location = args.location
        with rs.workdir() as tmp:
            opened = await rs.fetch_and_open(location, for_location(location, settings),
                                             private, hq.public_key_b64, Path(tmp))
            out: dict[str, Any] = {"verified": True, "site": opened.manifest["site"],
                                   "files": len(opened.manifest["files"])}
            if args.verify_only:
                return out
            if not args.dsn:
                raise SystemExit("kameng site restore: --dsn or KAMENG_PG_ADMIN_DSN is required")
            target = args.site or opened.manifest["site"]
            if await keyvault.load(kube, args.namespace, target) is None:
                raise ExportFailed(f"site {target} has no key copy yet: create its SubSite "
                                   "and wait for it to be provisioned, then restore")
            out["rows"] = await rs.load(opened, target, args.dsn)
            await _set_data_key(kube, args.namespace, target, opened.data_keys)
            out["restoredInto"] = target
            return out
    finally:
        await kube.close()


def run(args: argparse.Namespace) -> int:
    if args.site_verb == "restore":  # file reads here, not in the event loop
        args.key_material = Path(args.key_file).read_text().strip() if args.key_file else ""
        args.location = args.archive if "://" in args.archive else \
            f"file://{Path(args.archive).resolve()}"
    try:
        out = asyncio.run(_export(args) if args.site_verb == "export" else _restore(args))
    except (ExportFailed, StoreUnavailable, ArchiveInvalid, EnvelopeError, KubeError) as exc:
        print(f"kameng site {args.site_verb}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


# --- kubectl kameng export-data / terminate ----------------------------------------------

def add_kubectl_verbs(sub: Any) -> None:
    s = sub.add_parser("export-data", help="export a site's data for HQ (encrypted archive "
                       "in the export store) without terminating it")
    add_export_args(s)
    s.set_defaults(fn=lambda _api, args: _kubectl_export(args))
    s = sub.add_parser("terminate", help="end a site: export its data, reclaim it, "
                       "terminate its License (deletes the SubSite)")
    s.add_argument("site")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("--wait", type=float, default=600.0,
                   help="seconds to follow the progress (0: return at once)")
    s.set_defaults(fn=lambda _api, args: _kubectl_terminate(args))


def _kubectl_export(args: argparse.Namespace) -> int:
    args.site_verb = "export"
    return run(args)


def _kubectl_terminate(args: argparse.Namespace) -> int:
    if not args.yes:
        answer = input(f"Terminate {args.site}: export its data, then reclaim it per its "
                       "reclaimPolicy and delete its namespace? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("aborted", file=sys.stderr)
            return 1
    return asyncio.run(_terminate(args.site, args.wait))


async def _terminate(site: str, wait: float) -> int:
    kube = Kube.from_environment()
    path = path_for(API_VERSION, SUBSITE.kind, site)
    try:
        if not await kube.delete(path, kind=SUBSITE.kind):
            print(f"SubSite {site} not found", file=sys.stderr)
            return 1
        deadline, last = time.monotonic() + wait, ""
        while time.monotonic() < deadline:
            obj = await kube.get(path, kind=SUBSITE.kind)
            if obj is None:
                print(f"{site}: terminated")
                return 0
            st = obj.get("status") or {}
            stalled = next((c for c in st.get("conditions", []) if c.get("type") == "Stalled"
                            and c.get("status") == "True"), None)
            line = f"{site}: {st.get('phase', '?')}" + (
                f" - {stalled['message']}" if stalled else "")
            if st.get("export"):
                line += f" (archive {st['export']['location']}, SHA-256 {st['export']['sha256']})"
            if line != last:
                print(line, flush=True)
                last = line
            await asyncio.sleep(1.0)
        print(f"{site}: still terminating; follow `kubectl get ss {site}` (a stuck export "
              f"can be waived with the annotation {WAIVE_EXPORT_ANNOTATION}=true)",
              file=sys.stderr)
        return 2
    finally:
        await kube.close()
