"""The payment channel as the sub-site sees it: :class:`PaymentProvider`, implemented by
HQ's sandbox (:class:`SandboxProvider`) and implementable by a real provider.

Notifications follow :mod:`kameng.contracts.hq_api` (HMAC-signed, timestamped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from kameng.contracts.hq_api import (
    PaymentKind,
    PaymentNotification,
    PaymentRequest,
    verify_notification,
)
from kameng.contracts.hq_auth import notification_key, token_digest

from .hq_client import HqClient, HqError


class PaymentError(RuntimeError):
    """The payment channel refused (``status``, ``code``) or could not be reached
    (``status`` None)."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class PaymentSession:
    payment_id: str
    pay_url: str


class PaymentProvider(Protocol):
    async def create_payment(
        self, order_id: str, amount_fen: int, currency: str, notify_url: str, return_url: str,
        kind: PaymentKind = "order",
    ) -> PaymentSession: ...

    def verify_notification(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> PaymentNotification: ...

    async def refund(self, payment_id: str) -> None: ...


class SandboxProvider:
    """HQ's sandbox channel, reached through the site's :class:`HqClient`. HQ only opens
    payments for a site whose license is in force (the client sends the token)."""

    def __init__(self, hq: HqClient) -> None:
        self._hq = hq

    async def create_payment(
        self, order_id: str, amount_fen: int, currency: str, notify_url: str, return_url: str,
        kind: PaymentKind = "order",
    ) -> PaymentSession:
        try:
            req = PaymentRequest(order_id=order_id, amount=amount_fen, currency=currency,
                                 notify_url=notify_url, return_url=return_url, kind=kind)
            created = await self._hq.create_payment(req)
        except HqError as exc:
            raise PaymentError(str(exc), exc.status, exc.code) from exc
        except ValueError as exc:  # a body HQ would refuse anyway
            raise PaymentError(str(exc)) from exc
        return PaymentSession(payment_id=created.payment_id, pay_url=created.pay_url)

    def verify_notification(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> PaymentNotification:
        # HQ signs with the key it derives from the token's digest in its registry.
        key = notification_key(token_digest(self._hq.api_token))
        return verify_notification(key, headers, body, now)

    async def refund(self, payment_id: str) -> None:
        try:
            await self._hq.refund(payment_id)
        except HqError as exc:
            raise PaymentError(str(exc), exc.status, exc.code) from exc
