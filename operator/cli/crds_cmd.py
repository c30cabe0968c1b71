"""`kameng crds`: regenerate crds/ from operator/api/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kameng.api.common import GROUP
from kameng.api.crdgen import render, write_all
from kameng.api.resources import KINDS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("crds"), help="output directory")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the files on disk differ from the models")


def run(args: argparse.Namespace) -> int:
    if args.check:
        stale = [k.plural for k in KINDS
                 if not (args.out / f"{GROUP}_{k.plural}.yaml").is_file()
                 or (args.out / f"{GROUP}_{k.plural}.yaml").read_text("utf-8") != render(k)]
        if stale:
            print(f"crds/ is stale for {', '.join(stale)}: run `make crds`", file=sys.stderr)
            return 1
        return 0
    for path in write_all(args.out):
        print(path)
    return 0
