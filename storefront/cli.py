"""`kameng storefront`: run the storefront web app as HQ or as a sub-site, or import
HQ's products and card keys.

    kameng storefront --mode hq|subsite [--host 0.0.0.0] [--port 8080] [--ops-port 9090]
    kameng storefront hq-import [--products products.json] [--keys keys.csv]

Configuration and secrets come from the environment / mounted files documented in
``kameng_storefront.config`` (never from flags, so they do not show in process lists);
``hq-import`` reads HQ's, exactly as ``--mode hq`` does.
"""

from __future__ import annotations

import argparse
import os
import sys

from kameng.contracts import pod


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("hq", "subsite"), default=os.environ.get("KAMENG_MODE"),
                   help="hq (main site) or subsite (partner shop); default $KAMENG_MODE")
    p.add_argument("--host", default=os.environ.get("KAMENG_HOST", "0.0.0.0"),  # noqa: S104
                   help="listen address (default 0.0.0.0, in a pod)")
    p.add_argument("--port", type=int, default=int(os.environ.get("KAMENG_PORT", "8080")))
    p.add_argument("--ops-port", type=int,
                   default=int(os.environ.get(pod.OPS_PORT_ENV, pod.OPS_PORT.number)),
                   help="port of /healthz, /readyz and /metrics (never the public one)")
    p.add_argument("--log-level", default=os.environ.get("KAMENG_LOG_LEVEL", "INFO"))
    p.add_argument("--workers", type=int, default=int(os.environ.get(pod.WORKERS_ENV, "1")),
                   help="worker processes in this pod (default $KAMENG_WORKERS or 1); about "
                        "one per core the pod may use")
    sub = p.add_subparsers(dest="storefront_command", metavar="{hq-import}")
    imp = sub.add_parser(
        "hq-import", help="add or update HQ's products and import card keys",
        description="Add or update HQ's products (JSON) and import card keys (CSV, "
                    "encrypted at rest, duplicates skipped) into HQ's database. Idempotent. "
                    "Sub-sites see the change at their next catalogue sync.")
    imp.add_argument("--products", metavar="FILE",
                     help="JSON list of {id, category, faceValue, cost, nameZh, nameEn, "
                          "region}; amounts as decimal strings")
    imp.add_argument("--keys", metavar="FILE",
                     help="CSV of 'product_id,secret' rows (or 'secret' rows with --product)")
    imp.add_argument("--product", help="product of single-column --keys rows")


def run(args: argparse.Namespace) -> int:
    from kameng_storefront.logs import setup_logging

    setup_logging(args.log_level)
    if args.storefront_command == "hq-import":
        from kameng_storefront.hq.bulk_import import main as hq_import

        return hq_import(args.products, args.keys, args.product)
    if args.mode is None:
        print("kameng storefront: --mode hq|subsite (or KAMENG_MODE) is required",
              file=sys.stderr)
        return 2

    from kameng_storefront import workers

    if args.workers > 1 and not os.environ.get(workers.LISTEN_FDS_ENV):
        # The supervisor: binds the ports and runs the workers (each this same command).
        return workers.supervise(
            ["storefront", "--mode", args.mode, "--host", args.host, "--port", str(args.port),
             "--ops-port", str(args.ops_port), "--log-level", args.log_level, "--workers", "1"],
            args.workers, args.host, args.port, args.ops_port)

    import asyncio

    from kameng_storefront.app import create_app, serve
    from kameng_storefront.config import ConfigError, load_settings
    from kameng_storefront.crypto import CryptoError

    try:
        settings = load_settings(mode=args.mode)
        app = create_app(settings)
    except (ConfigError, CryptoError, ValueError) as exc:
        # Names the setting at fault, never a value.
        print(f"kameng storefront: configuration error: {exc}", file=sys.stderr)
        return 2
    try:  # libuv's event loop where installed (a dependency on Linux): less time per request
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    run_loop(serve(app, args.host, args.port, args.ops_port))
    return 0
