"""Mark the I/O parts of the staged mutation-tested modules as not to be mutated.

Mutation testing runs the fast unit tests only, so it covers the pure parts of the
modules in pyproject.toml [tool.mutmut] only_mutate: a top-level ``async def`` talks to
PostgreSQL, Redis or HQ and is the integration tests' job (too slow to run per mutant).
mutmut's own ``do_not_mutate_patterns`` skips single lines, not whole functions, so this
wraps each such function of the STAGED copy (build/mutation/, never the source tree) in
``# pragma: no mutate start`` / ``end`` comments.

Usage: python hack/mutation_stage.py <stage dir>
"""

from __future__ import annotations

import ast
import fnmatch
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mark_io_functions(source: str, also: frozenset[str] = frozenset()) -> str:
    """Wrap every top-level ``async def`` and the functions named in ``also``."""
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.AsyncFunctionDef) or (
                isinstance(node, ast.FunctionDef) and node.name in also):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((first, node.end_lineno or node.lineno))
    for first, last in reversed(spans):  # from the bottom, so line numbers stay valid
        lines.insert(last, "# pragma: no mutate end\n")
        lines.insert(first - 1, "# pragma: no mutate start\n")
    return "".join(lines)


def main(stage: Path) -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    patterns = tool["mutmut"]["only_mutate"]
    # "path:function" of page renderers in those modules: they only build an HTTP
    # response from a template (the integration and browser tests' job); listed, with
    # the reason, in docs/mutation.md.
    renderers: dict[str, set[str]] = {}
    for entry in tool.get("kameng", {}).get("mutation", {}).get("not_mutated", []):
        path, _, name = entry.partition(":")
        renderers.setdefault(path, set()).add(name)
    for path in sorted(stage.rglob("*.py")):
        rel = path.relative_to(stage).as_posix()
        if any(fnmatch.fnmatch(rel, p) for p in patterns):
            path.write_text(mark_io_functions(path.read_text(),
                                              frozenset(renderers.get(rel, ()))))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
