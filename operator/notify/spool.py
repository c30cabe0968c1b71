"""The local notifier: one JSON file per notice in a directory (written atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import Notice, NotifyError


class SpoolNotifier:
    name = "spool"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def send(self, notice: Notice) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            target = self.directory / f"{notice.id}.json"
            # Same id → same file: a resend after a crash replaces, never duplicates.
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".notice-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(notice.to_json())
            os.replace(tmp, target)
        except OSError as e:
            raise NotifyError(f"spool {self.directory}: {e.strerror or e}") from None
