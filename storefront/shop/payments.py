"""The payment channel as the sub-site sees it: :class:`PaymentProvider`, implemented by
HQ's sandbox (:class:`SandboxProvider`) and implementable by a real provider.

Pay links and notifications follow :mod:`kameng.contracts.hq_api` (HMAC-signed).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from kameng.contracts.hq_api import (
    PAY_LINK_SECONDS,
    PaymentKind,
    PaymentLink,
    PaymentNotification,
    PaymentRequest,
    pay_link_path,
    sign_payment_link,
    verify_notification,
)
from kameng.contracts.hq_auth import notification_key, payment_link_key, token_digest

from .hq_client import HqClient, HqError


class PaymentError(RuntimeError):
    """The payment channel refused (``status``, ``code``) or could not be reached
    (``status`` None)."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class PaymentSession:
    payment_id: str | None  # None: the channel names the payment when it is paid
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
    """HQ's sandbox channel. What a customer pays (an order, a top-up) gets a pay link the
    site signs itself, on HQ's public URL ``pay_base``: no call to HQ at checkout. A wallet
    payment is a call through the site's :class:`HqClient`, which HQ answers from the
    site's escrow and only while the site's license is in force (the client sends it)."""

    def __init__(self, hq: HqClient, pay_base: str) -> None:
        self._hq, self._pay_base = hq, pay_base.rstrip("/")

    async def create_payment(
        self, order_id: str, amount_fen: int, currency: str, notify_url: str, return_url: str,
        kind: PaymentKind = "order",
    ) -> PaymentSession:
        if kind != "wallet":
            return PaymentSession(None, self.pay_link(PaymentRequest(
                order_id=order_id, amount=amount_fen, currency=currency,
                notify_url=notify_url, return_url=return_url, kind=kind)))
        try:
            req = PaymentRequest(order_id=order_id, amount=amount_fen, currency=currency,
                                 notify_url=notify_url, return_url=return_url, kind=kind)
            created = await self._hq.create_payment(req)
        except HqError as exc:
            raise PaymentError(str(exc), exc.status, exc.code) from exc
        except ValueError as exc:  # a body HQ would refuse anyway
            raise PaymentError(str(exc)) from exc
        return PaymentSession(payment_id=created.payment_id, pay_url=created.pay_url)

    def pay_link(self, req: PaymentRequest, now: float | None = None) -> str:
        link = PaymentLink(**req.model_dump(), site=self._hq.site,
                           expires=int(time.time() if now is None else now) + PAY_LINK_SECONDS)
        key = payment_link_key(token_digest(self._hq.api_token))
        return self._pay_base + pay_link_path(sign_payment_link(key, link))

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
