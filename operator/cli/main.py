"""`kameng`: one entry point for every component and for development chores."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

# Subcommands live in their own modules and are imported only when chosen, so that
# `kameng crds` does not pay for importing kopf or the storefront.
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("kameng.cli.crds_cmd", "write the CRDs in crds/ from the typed models"),
}


def _register(name: str, module: str, help_: str) -> None:
    _SUBCOMMANDS[name] = (module, help_)


def _optional(name: str, module: str, help_: str) -> None:
    # Components land one issue at a time; a subcommand appears when its module does.
    if importlib.util.find_spec(module) is not None:
        _register(name, module, help_)


_optional("operator", "kameng.cli.operator_cmd", "run the kopf operator")
_optional("storefront", "kameng.cli.storefront_cmd", "run the storefront (hq or subsite)")


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


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


if __name__ == "__main__":
    sys.exit(main())
