"""Rendered pages kept in memory until the data under them changes, and the pod-wide
counter that says when it did.

A page is cached under a key (locale, license mode, ...) with the :class:`SharedCounter`
value read *before* its data was read; it is served while the counter still has that
value. Whoever changes the data bumps the counter after the change commits, so a page can
never outlive the data it was rendered from by more than the bump's own latency. The
counter lives in a small memory-mapped file shared by every worker process of the pod
(``kameng storefront --workers N``), so a bump by the worker that synced the catalogue is
seen by all of them on their next request, without a round trip to anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

# Bounded: keys carry the license token, so each renewal leaves old keys behind.
_MAX_PAGES = 64


def etag_matches(etag: str, if_none_match: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak validators compare equal, RFC 9110)."""
    return etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]


class SharedCounter:
    """A 64-bit counter every process that opens the same ``path`` sees; in this process
    only when ``path`` is None (one worker, tests)."""

    def __init__(self, path: Path | None = None) -> None:
        self._fd: int | None = None
        if path is None:
            self._mem: mmap.mmap | bytearray = bytearray(8)
            return
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < 8:
            os.ftruncate(self._fd, 8)
        self._mem = mmap.mmap(self._fd, 8)

    def value(self) -> int:
        return struct.unpack_from("Q", self._mem)[0]

    def bump(self) -> int:
        """Add one. Between processes under an exclusive lock of the file: two bumps at
        once must both count, or a page rendered between them would survive the second."""
        if self._fd is None:
            struct.pack_into("Q", self._mem, 0, self.value() + 1)
            return self.value()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            new = self.value() + 1
            struct.pack_into("Q", self._mem, 0, new)
            return new
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class CachedPage:
    generation: int
    body: bytes
    etag: str


class PageCache:
    """Rendered pages by key, each valid while :attr:`counter` has its generation."""

    def __init__(self, counter: SharedCounter) -> None:
        self.counter = counter
        self._pages: dict[Hashable, CachedPage] = {}
        self._source: Hashable = None

    def observe(self, source: Hashable) -> None:
        """``source`` marks the data under the pages as the database has it now (written
        by anyone, e.g. another replica); a change from the last one observed invalidates."""
        if self._source is not None and source != self._source:
            self.invalidate()
        self._source = source

    def get(self, key: Hashable) -> CachedPage | None:
        page = self._pages.get(key)
        if page is None or page.generation != self.counter.value():
            return None
        return page

    def put(self, key: Hashable, generation: int, body: bytes) -> CachedPage:
        """Keep ``body``, rendered from data read after the counter was ``generation``."""
        if len(self._pages) >= _MAX_PAGES:
            self._pages.clear()
        page = CachedPage(generation, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        self._pages[key] = page
        return page

    def invalidate(self) -> None:
        """The data under the pages changed (call after the change committed)."""
        self.counter.bump()
