"""The site's Secrets. Values come in through :class:`~.context.SiteSecrets`; this
module only lays them out under the names and keys of the contract."""

from __future__ import annotations

import base64
from typing import Any

from kameng.contracts import pod

from .context import APP_NAME, SiteContext, meta


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
    values = {
        pod.DB_DSN: s.db_dsn,
        pod.REDIS_URL: s.redis_url,
        pod.SESSION_SECRET: s.session_secret,
        pod.DATA_KEYS: s.data_key,
        pod.HQ_API_TOKEN: s.hq_api_token,
        pod.LICENSE_TOKEN: s.license_token,
    }
    return [_secret(ctx, name, {k.key: values[k] for k in pod.keys_of(name)})
            for name in pod.SITE_SECRETS]
