"""The input of KamengStorefrontDatabaseTimeouts: a request that waited in vain for a
database connection is counted and answered 503 with Retry-After (not a 500 page)."""

from __future__ import annotations

from pathlib import Path

from psycopg_pool import PoolTimeout
from starlette.routing import Route
from starlette.testclient import TestClient

from kameng_storefront.app import create_app
from kameng_storefront.state import state_of
from tests.support.storefront import hq_settings_for


def test_pool_timeout_is_counted_and_answered_503(tmp_path: Path) -> None:
    app = create_app(hq_settings_for("postgresql://unused", "redis://unused", "http://hq",
                                     "", tmp_path))

    async def waits_for_a_connection(request):
        raise PoolTimeout("couldn't get a connection after 30.00 sec")

    app.router.routes.append(Route("/needs-db", waits_for_a_connection))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no database
    for _ in range(2):
        r = client.get("/needs-db")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
    text = state_of(app).metrics.render().decode()
    assert "kameng_storefront_db_timeouts_total 2.0" in text
