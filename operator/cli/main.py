"""`kameng`: one entry point for every component and for development chores."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# name → (module, help). Modules are named, not imported, here: one is imported only
# when the parser is built, and `storefront` belongs to the storefront package, which
# `kameng` itself never imports.
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("kameng.cli.crds_cmd", "write the CRDs in crds/ from the typed models"),
    "ledger": ("kameng.cli.ledger_cmd", "verify the settlement ledger (or apply its "
                                        "migrations)"),
    "operator": ("kameng.cli.operator_cmd", "run the kopf operator"),
    "site": ("kameng.cli.site_cmd", "export a site's data for HQ, or restore an exit archive "
                                   "into a fresh site"),
    "settlement": ("kameng.cli.settlement_cmd", "run the settlement worker (order events "
                                                "into the ledger, payouts, statements)"),
    "risk": ("kameng.workers.risk.cli", "run the risk worker (rules on every order stream), "
                                        "or backtest a RiskPolicy"),
    "storefront": ("kameng_storefront.cli", "run the storefront (hq or subsite), or import "
                                            "HQ's products and card keys"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[..., int]]]:
    parser = argparse.ArgumentParser(prog="kameng", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runners: dict[str, Callable[..., int]] = {}
    for name, (module, help_) in _SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        runners[name] = mod.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    return int(runners[args.command](args) or 0)


if __name__ == "__main__":
    sys.exit(main())
