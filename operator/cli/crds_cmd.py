"""`kameng crds`: regenerate the CRDs (crds/ and the Helm chart's copy) from the models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kameng.api.common import GROUP
from kameng.api.crdgen import render
from kameng.api.resources import KINDS

# Helm installs CRDs only from a chart's own crds/ directory, so the chart carries a
# generated copy; both are written and checked together.
DEFAULT_OUTPUTS = (Path("crds"), Path("charts/kameng/crds"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, action="append",
                   help="output directory (repeatable; default: crds/ and charts/kameng/crds/)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the files on disk differ from the models")


def run(args: argparse.Namespace) -> int:
    outs = args.out or list(DEFAULT_OUTPUTS)
    stale = []
    for out in outs:
        for kind in KINDS:
            path = out / f"{GROUP}_{kind.plural}.yaml"
            text = render(kind)
            if args.check:
                if not path.is_file() or path.read_text("utf-8") != text:
                    stale.append(str(path))
                continue
            out.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text("utf-8") != text:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run `make crds`", file=sys.stderr)
        return 1
    return 0
