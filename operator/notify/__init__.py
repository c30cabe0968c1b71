"""Notifiers: how partners and HQ hear about a License before its term ends.

One interface (:class:`Notifier`), three implementations: :class:`~.spool.SpoolNotifier`
(one JSON file per notice in a directory: the local default, and what tests read),
:class:`~.webhook.WebhookNotifier` (an HTTP POST with a bearer token from a Secret) and
:class:`~.smtp.SmtpNotifier` (e-mail; password from a Secret). :func:`~.config.build`
assembles the configured ones. Secrets are read when a notice is sent (a rotated
Secret needs no restart) and never appear in logs, Events or exceptions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    """One expiry notice. ``id`` is stable per License, term and lead time: receivers
    use it to drop a duplicate (delivery is at least once: a crash between sending and
    recording in status sends again)."""

    id: str
    license: str
    site: str
    state: str
    before: str  # the lead time, e.g. "168h"
    term_end: str  # RFC 3339
    grace_until: str
    left: str  # human: "7d", "23h"
    message: str
    recipients: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        body = asdict(self)
        body["recipients"] = list(self.recipients)
        return json.dumps(body, sort_keys=True)

    @property
    def subject(self) -> str:
        return f"[kameng] License {self.license} of {self.site} ends in {self.left}"


class NotifyError(Exception):
    """A notifier could not deliver; the message names the channel, never a secret."""


class Notifier(Protocol):
    name: str

    async def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise :class:`NotifyError`."""


class Notifiers:
    """Every configured notifier; a notice counts as sent when all of them took it."""

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    async def send(self, notice: Notice) -> None:
        failed = []
        for n in self.notifiers:
            try:
                await n.send(notice)
            except NotifyError as e:
                log.warning("notice %s not delivered by %s: %s", notice.id, n.name, e)
                failed.append(n.name)
        if failed:
            # All or nothing: the notice is retried, and a channel that already took it
            # drops the repeat by its id.
            raise NotifyError(f"not delivered by {', '.join(failed)}")
