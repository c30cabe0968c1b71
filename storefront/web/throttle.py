"""Failure throttle for guessable forms (order lookup, staff login).

In memory, per replica: it slows a brute-force run to a crawl without a shared store;
exact global counting is not needed for that.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque


class FailureThrottle:
    def __init__(self, max_failures: int = 10, window_seconds: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._failures[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, key: str) -> bool:
        q = self._trim(key, time.monotonic())
        if not q:
            self._failures.pop(key, None)  # keep the map from growing with idle keys
            return False
        return len(q) >= self.max_failures

    def failed(self, key: str) -> None:
        now = time.monotonic()
        self._trim(key, now).append(now)
