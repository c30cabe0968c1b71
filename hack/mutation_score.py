"""Score of a mutmut run per mutation-tested module, and the verdict of `make mutation`.

Input: the output of ``mutmut results --all true`` (one ``<key>: <status>`` line per
mutant, the key being ``<module>.x_<function>__mutmut_<n>`` or
``<module>.xǁ<Class>ǁ<method>__mutmut_<n>``). A mutant counts as killed when a test
failed (or timed out) on it; every other outcome (survived, no tests) counts against the
score. Survivors not named in docs/mutation.md are listed so they get a test or a line
there. Exit 1 when the overall score is below [tool.mutmut] threshold in pyproject.toml.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
_KEY = re.compile(r"^\s*(?P<key>\S+): (?P<status>.+?)\s*$")


def module_of(key: str) -> str:
    """``kameng.contracts.money.x_to_fen__mutmut_3`` → ``kameng.contracts.money``."""
    head = key.split("__mutmut_")[0]
    return head.rsplit(".", 1)[0]


def parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _KEY.match(line)
        if m and "__mutmut_" in m["key"]:
            out[m["key"]] = m["status"]
    return out


def documented(doc: str) -> set[str]:
    """Mutant keys named (in backticks) in docs/mutation.md. On one line, a backticked
    ``_<n>`` after a full key is another mutant of the same function; a backticked
    ``x_<function>__mutmut_<n>`` or ``xǁ...`` after a full key is in the same module."""
    keys: set[str] = set()
    for line in doc.splitlines():
        prefix = module = ""
        for tok in re.findall(r"`([^`\s]+)`", line):
            if m := re.fullmatch(r"(.+\.)(x[_ǁ].+__mutmut_)(\d+)", tok):
                module, prefix = m[1], m[1] + m[2]
                keys.add(tok)
            elif module and (m := re.fullmatch(r"(x[_ǁ].+__mutmut_)(\d+)", tok)):
                prefix = module + m[1]
                keys.add(tok if "." in tok else module + tok)
            elif prefix and (m := re.fullmatch(r"_(\d+)", tok)):
                keys.add(prefix + m[1])
    return keys


def main(argv: list[str]) -> int:
    results = parse(Path(argv[1]).read_text())
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    threshold = float(cfg.get("threshold", 90))
    if not results:
        print("[mutation] no mutants found: is the module list in pyproject.toml right?")
        return 1
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for key, status in results.items():
        per[module_of(key)]["killed" if status in KILLED else status] += 1
    explained = documented((ROOT / "docs" / "mutation.md").read_text())
    print(f"{'module':45} {'mutants':>7} {'killed':>7} {'score':>7}  other")
    total = killed = 0
    for mod in sorted(per):
        c = per[mod]
        n, k = sum(c.values()), c["killed"]
        total, killed = total + n, killed + k
        other = ", ".join(f"{v} {s}" for s, v in sorted(c.items()) if s != "killed")
        print(f"{mod:45} {n:7} {k:7} {100 * k / n:6.1f}%  {other}")
    score = 100 * killed / total
    survivors = sorted(k for k, s in results.items() if s not in KILLED)
    unexplained = [k for k in survivors if k not in explained]
    print(f"{'TOTAL':45} {total:7} {killed:7} {score:6.1f}%  "
          f"({len(survivors) - len(unexplained)} survivors explained in docs/mutation.md)")
    if unexplained:
        print("[mutation] survivors neither killed nor explained in docs/mutation.md "
              "(see one with: cd build/mutation && ../../.venv/bin/mutmut show <key>):")
        for k in unexplained:
            print(f"  {k}: {results[k]}")
    if score < threshold:
        print(f"[mutation] FAIL: {score:.1f}% killed, below the threshold of {threshold:g}%")
        return 1
    print(f"[mutation] OK: {score:.1f}% killed (threshold {threshold:g}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
