"""`kameng storefront`: run the storefront web app, as HQ or as a sub-site.

    kameng storefront --mode hq|subsite [--host 0.0.0.0] [--port 8080]
    kameng storefront --demo            # HQ + one sub-site on loopback, sample data

Configuration and secrets come from the environment / mounted files documented in
``kameng_storefront.config`` (never from flags, so they do not show in process lists).
``--demo`` needs ``KAMENG_PG_ADMIN_DSN`` and ``KAMENG_REDIS_URL`` (``hack/devenv up``).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("hq", "subsite"), default=os.environ.get("KAMENG_MODE"),
                   help="hq (main site) or subsite (partner shop); default $KAMENG_MODE")
    p.add_argument("--host", default=os.environ.get("KAMENG_HOST", "0.0.0.0"),  # noqa: S104
                   help="listen address (default 0.0.0.0, in a pod)")
    p.add_argument("--port", type=int, default=int(os.environ.get("KAMENG_PORT", "8080")))
    p.add_argument("--log-level", default=os.environ.get("KAMENG_LOG_LEVEL", "INFO"))
    p.add_argument("--demo", action="store_true",
                   help="start HQ and a sample sub-site on 127.0.0.1 with sample products "
                        "(throwaway databases from $KAMENG_PG_ADMIN_DSN)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """For callers that register subcommands themselves."""
    p = subparsers.add_parser("storefront", help="run the storefront (hq or subsite)")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from kameng_storefront.logs import setup_logging

    setup_logging(args.log_level)
    if args.demo:
        from kameng_storefront.demo import run_demo

        return run_demo()
    if args.mode is None:
        print("kameng storefront: --mode hq|subsite (or KAMENG_MODE) is required",
              file=sys.stderr)
        return 2

    import uvicorn

    from kameng_storefront.app import create_app
    from kameng_storefront.config import ConfigError, load_settings
    from kameng_storefront.crypto import CryptoError

    try:
        settings = load_settings(mode=args.mode)
        app = create_app(settings)
    except (ConfigError, CryptoError, ValueError) as exc:
        # Names the setting at fault, never a value.
        print(f"kameng storefront: configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                proxy_headers=True, forwarded_allow_ips="*")
    return 0
