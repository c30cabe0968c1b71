"""Payment channel contract: HMAC-signed asynchronous notifications, and the interface
(:class:`PaymentProvider`) the sub-site uses, implemented by the HQ sandbox
(:class:`SandboxProvider`) and implementable by a real provider.

Notification = HTTP POST of a JSON body with headers
``X-Kameng-Timestamp: <unix seconds>`` and
``X-Kameng-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.
The timestamp is signed, so a captured notification cannot be re-dated; the receiver
refuses stale ones (:data:`TOLERANCE_SECONDS`) and records ``notification_id`` so a
replay inside the window changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

__all__ = [
    "TOLERANCE_SECONDS",
    "NotificationError",
    "PaymentError",
    "PaymentNotification",
    "PaymentProvider",
    "PaymentSession",
    "SandboxProvider",
    "sign_notification",
    "verify_notification",
]

TOLERANCE_SECONDS = 300


class NotificationError(ValueError):
    """Refused notification (bad signature, stale, malformed)."""


class PaymentError(RuntimeError):
    """The payment channel refused or failed a request."""


@dataclass(frozen=True)
class PaymentSession:
    payment_id: str
    pay_url: str


@dataclass(frozen=True)
class PaymentNotification:
    notification_id: str
    payment_id: str
    site: str
    order_id: str
    amount: int
    currency: str
    status: str


def sign_notification(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_notification(
    secret: str, headers: dict[str, str], body: bytes, now: float | None = None
) -> PaymentNotification:
    now = time.time() if now is None else now
    try:
        ts = int(headers.get("x-kameng-timestamp", ""))
    except ValueError as exc:
        raise NotificationError("missing or bad timestamp") from exc
    expected = sign_notification(secret, ts, body)
    if not hmac.compare_digest(expected, headers.get("x-kameng-signature", "")):
        raise NotificationError("bad signature")
    if abs(now - ts) > TOLERANCE_SECONDS:
        raise NotificationError("stale timestamp")
    try:
        data = json.loads(body)
        return PaymentNotification(
            notification_id=str(data["notification_id"]),
            payment_id=str(data["payment_id"]),
            site=str(data["site"]),
            order_id=str(data["order_id"]),
            amount=int(data["amount"]),
            currency=str(data.get("currency", "CNY")),
            status=str(data["status"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise NotificationError("malformed body") from exc


class PaymentProvider(Protocol):
    async def create_payment(
        self, order_id: str, amount_fen: int, currency: str, notify_url: str, return_url: str
    ) -> PaymentSession: ...

    def verify_notification(
        self, headers: dict[str, str], body: bytes, now: float | None = None
    ) -> PaymentNotification: ...

    async def refund(self, payment_id: str) -> None: ...


class SandboxProvider:
    """HQ's sandbox channel, reached with the site's HQ API token (also the HMAC key).

    HQ only opens payments for a site whose license is in force, so every call carries the
    current license token (``license_token`` returns it).
    """

    def __init__(
        self, http: httpx.AsyncClient, hq_url: str, site: str, api_token: str,
        license_token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._http, self._hq, self._site, self._token = http, hq_url, site, api_token
        self._license = license_token

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}", "X-Kameng-Site": self._site,
            "X-Kameng-License": self._license() or "",
        }

    async def create_payment(
        self, order_id: str, amount_fen: int, currency: str, notify_url: str, return_url: str
    ) -> PaymentSession:
        body = {
            "order_id": order_id, "amount": amount_fen, "currency": currency,
            "notify_url": notify_url, "return_url": return_url,
        }
        try:
            r = await self._http.post(
                f"{self._hq}/api/v1/payments", json=body, headers=self._headers(), timeout=10
            )
        except httpx.HTTPError as exc:
            raise PaymentError(f"payment channel unreachable: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise PaymentError(f"payment channel refused: HTTP {r.status_code}")
        data = r.json()
        return PaymentSession(payment_id=data["payment_id"], pay_url=data["pay_url"])

    def verify_notification(
        self, headers: dict[str, str], body: bytes, now: float | None = None
    ) -> PaymentNotification:
        return verify_notification(self._token, headers, body, now)

    async def refund(self, payment_id: str) -> None:
        try:
            r = await self._http.post(
                f"{self._hq}/api/v1/payments/{payment_id}/refund", headers=self._headers(),
                timeout=10,
            )
        except httpx.HTTPError as exc:
            raise PaymentError(f"payment channel unreachable: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise PaymentError(f"refund refused: HTTP {r.status_code}")
