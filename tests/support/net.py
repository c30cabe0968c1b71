"""Loopback helpers. The one `free_port` lives with the dev environment (hack/devenv.py,
standard library only, so it runs before any virtualenv exists); tests and bench/ use it
from here."""

from __future__ import annotations

from hack.devenv import free_port

__all__ = ["free_port"]
