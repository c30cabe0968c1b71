"""Loopback helpers. The one `free_port` lives with the dev environment (hack/devenv.py,
standard library only, so it runs before any virtualenv exists); tests and bench/ use it
from here."""

from __future__ import annotations

from hack.devenv import free_port

__all__ = ["HTTP_TIMEOUT", "free_port"]

# Test clients' HTTP timeout: httpx's default (5 s) is a latency claim no test means to
# make, and a loaded 2-core machine (a soak at load average 6+) exceeds it now and then.
# Tests that do claim a latency measure it themselves.
HTTP_TIMEOUT = 30.0
