"""Sub-site (partner shop) mode: catalogue sync, customer pages, checkout and orders,
the back office and the partner's balance."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from . import account, admin, pages, requests


def routes() -> list[BaseRoute]:
    return [
        *pages.routes(),
        *account.routes(),
        Route("/admin", admin.dashboard),
        Mount("/admin", routes=[*requests.routes(), *admin.routes()]),
    ]
