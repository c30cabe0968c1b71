"""The operator's notifiers, from its environment; secrets from Secrets in its namespace.

``KAMENG_NOTIFY_SPOOL_DIR``      directory for the local notifier (one JSON file a notice)
``KAMENG_NOTIFY_WEBHOOK_URL``    webhook endpoint; ``KAMENG_NOTIFY_WEBHOOK_SECRET`` names
                                 a Secret whose key ``token`` is sent as a bearer token
``KAMENG_NOTIFY_SMTP_HOST``      SMTP server (``..._PORT`` 587, ``..._FROM``,
                                 ``..._USERNAME``, ``..._STARTTLS`` true); the Secret named
                                 by ``KAMENG_NOTIFY_SMTP_SECRET`` holds key ``password``
``KAMENG_NOTIFY_HQ_EMAIL``       HQ's address, copied on every e-mail notice
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from kameng.kube.client import Kube, KubeError, path_for

from . import Notifier, Notifiers
from .smtp import SmtpNotifier
from .spool import SpoolNotifier
from .webhook import WebhookNotifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotifyConfig:
    spool_dir: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_from: str = "kameng@localhost"
    smtp_username: str | None = None
    smtp_secret: str | None = None
    smtp_starttls: bool = True
    hq_email: str | None = None

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> NotifyConfig:
        return cls(
            spool_dir=e.get("KAMENG_NOTIFY_SPOOL_DIR") or None,
            webhook_url=e.get("KAMENG_NOTIFY_WEBHOOK_URL") or None,
            webhook_secret=e.get("KAMENG_NOTIFY_WEBHOOK_SECRET") or None,
            smtp_host=e.get("KAMENG_NOTIFY_SMTP_HOST") or None,
            smtp_port=int(e.get("KAMENG_NOTIFY_SMTP_PORT") or 587),
            smtp_from=e.get("KAMENG_NOTIFY_SMTP_FROM") or "kameng@localhost",
            smtp_username=e.get("KAMENG_NOTIFY_SMTP_USERNAME") or None,
            smtp_secret=e.get("KAMENG_NOTIFY_SMTP_SECRET") or None,
            smtp_starttls=(e.get("KAMENG_NOTIFY_SMTP_STARTTLS") or "true").lower()
            not in ("0", "false", "no"),
            hq_email=e.get("KAMENG_NOTIFY_HQ_EMAIL") or None,
        )


def secret_key(kube: Kube, namespace: str, name: str, key: str
               ) -> Callable[[], Awaitable[str | None]]:
    """A reader of one key of one Secret, read at each use (rotation needs no restart)."""
    async def read() -> str | None:
        try:
            obj = await kube.get(path_for("v1", "Secret", name, namespace), kind="Secret")
        except KubeError as e:
            log.warning("notifier Secret %s/%s not read: %s", namespace, name, e)
            return None
        raw = ((obj or {}).get("data") or {}).get(key)
        return base64.b64decode(raw).decode() if raw else None
    return read


def build(cfg: NotifyConfig, kube: Kube, namespace: str) -> Notifiers:
    out: list[Notifier] = []
    if cfg.spool_dir:
        out.append(SpoolNotifier(cfg.spool_dir))
    if cfg.webhook_url:
        token = secret_key(kube, namespace, cfg.webhook_secret, "token") \
            if cfg.webhook_secret else None
        out.append(WebhookNotifier(cfg.webhook_url, token))
    if cfg.smtp_host:
        password = secret_key(kube, namespace, cfg.smtp_secret, "password") \
            if cfg.smtp_secret else None
        out.append(SmtpNotifier(cfg.smtp_host, cfg.smtp_port, cfg.smtp_from,
                                username=cfg.smtp_username, password=password,
                                starttls=cfg.smtp_starttls,
                                always_to=(cfg.hq_email,) if cfg.hq_email else ()))
    return Notifiers(out)
