"""Costs on the storefront's hot paths that no functional test sees."""

from __future__ import annotations

import asyncio
import sys
from importlib.abc import MetaPathFinder


class _Lookups(MetaPathFinder):
    """Records every module name the import system is asked to find."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.names.append(name)
        return None  # not ours: the next finder goes on


def test_httpx_calls_do_not_search_for_a_module_on_every_request():
    """httpcore asks sniffio for the event loop on each request (pool, locks); without
    sniffio installed each ask is a failed import that stats every sys.path entry (8.6 %
    of a shop's checkout samples in bench/storefront_bench.py --profile)."""
    from httpcore._synchronization import current_async_library

    async def ask() -> str:
        return current_async_library()

    finder = _Lookups()
    sys.meta_path.insert(0, finder)
    try:
        for _ in range(3):
            assert asyncio.run(ask()) == "asyncio"
    finally:
        sys.meta_path.remove(finder)
    assert finder.names == [], f"import searches on the request path: {finder.names}"
