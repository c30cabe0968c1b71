"""The site's Secrets. Values come in through :class:`~.context.SiteSecrets`; this
module only lays them out under the names and keys of the contract."""

from __future__ import annotations

import base64
from typing import Any

from .context import APP_NAME, SiteContext, meta

DB_SECRET = "storefront-db"  # noqa: S105 - a Secret name
REDIS_SECRET = "storefront-redis"  # noqa: S105 - a Secret name
KEYS_SECRET = "storefront-keys"  # noqa: S105 - a Secret name
LICENSE_SECRET = "license"  # noqa: S105 - a Secret name
SECRET_NAMES = (DB_SECRET, REDIS_SECRET, KEYS_SECRET, LICENSE_SECRET)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode("ascii")


def unb64(value: str | None) -> str:
    return base64.b64decode(value or "").decode() if value else ""


def _secret(ctx: SiteContext, name: str, data: dict[str, str]) -> dict[str, Any]:
    # `data` (base64) rather than `stringData`: the server stores `data`, so comparing
    # desired with live needs no translation and an unchanged Secret is never re-sent.
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(ctx, name, APP_NAME),
        "type": "Opaque",
        "data": {k: b64(v) for k, v in sorted(data.items())},
    }


def secrets(ctx: SiteContext) -> list[dict[str, Any]]:
    s = ctx.secrets
    return [
        _secret(ctx, DB_SECRET, {"dsn": s.db_dsn}),
        _secret(ctx, REDIS_SECRET, {"url": s.redis_url}),
        _secret(ctx, KEYS_SECRET, {"session-secret": s.session_secret,
                                   "data-key": s.data_key,
                                   "hq-api-token": s.hq_api_token}),
        _secret(ctx, LICENSE_SECRET, {"token": s.license_token}),
    ]
