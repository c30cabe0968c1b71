"""HQ mode: master catalogue and inventory, the sub-sites' API, the sandbox payment channel
and its notifications."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount

from . import api, pages


def routes() -> list[BaseRoute]:
    return [Mount(api.API_PREFIX, routes=api.routes()), *pages.routes()]
