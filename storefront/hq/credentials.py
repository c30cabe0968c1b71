"""The site-credential registry as HQ reads it: one file per site in a directory (the
mounted Secret :data:`kameng.contracts.hq_auth.REGISTRY_SECRET`).

A site's file is re-read whenever it changes (checked by ``stat`` on every lookup, which
costs microseconds), so a revocation or rotation the operator publishes takes effect at
HQ as soon as the file does, without a restart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kameng.contracts.hq_auth import CredentialError, SiteCredential, valid_site_name

log = logging.getLogger("kameng.storefront.hq")


class CredentialRegistry:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        # site → ((inode, mtime_ns, size) of the file read, its entry)
        self._cache: dict[str, tuple[tuple[int, int, int], SiteCredential | None]] = {}

    def get(self, site: str) -> SiteCredential | None:
        """The site's entry, or None (unknown site, no file, unreadable or foreign entry)."""
        if not valid_site_name(site):
            return None  # never turn a header into a path outside the directory
        path = self.directory / site
        try:
            st = os.stat(path)  # follows the kubelet's ..data symlink
        except OSError:
            self._cache.pop(site, None)
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(site)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        entry: SiteCredential | None
        try:
            entry = SiteCredential.from_json(path.read_bytes())
        except (OSError, CredentialError) as exc:
            log.error("site credential unreadable", extra={"site": site, "error": str(exc)})
            entry = None
        if entry is not None and entry.site != site:
            log.error("site credential names another site", extra={"site": site})
            entry = None
        self._cache[site] = (stamp, entry)
        return entry
