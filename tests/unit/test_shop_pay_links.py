"""The shop's side of the sandbox channel: what a customer pays gets a pay link the site
signs itself (no call to HQ), which HQ's key for the site verifies; a wallet payment is
still a call, answered from the site's escrow."""

from __future__ import annotations

import asyncio
import time

import pytest

from kameng.contracts.hq_api import PAY_LINK_SECONDS, PaymentCreated, verify_payment_link
from kameng.contracts.hq_auth import payment_link_key, token_digest
from kameng_storefront.shop.payments import SandboxProvider


class _Hq:
    """Only what SandboxProvider reads of the site's HqClient, and a record of calls."""

    site, api_token = "demo", "tok-demo"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def create_payment(self, req):
        self.calls.append(req.kind)
        return PaymentCreated(payment_id="P-wallet", pay_url="unused")


def _key_of(site: str) -> str | None:
    return payment_link_key(token_digest("tok-demo")) if site == "demo" else None


@pytest.mark.parametrize("kind", ["order", "topup"])
def test_what_a_customer_pays_gets_a_signed_link_without_a_call(kind):
    hq = _Hq()
    provider = SandboxProvider(hq, "https://hq.example/")  # type: ignore[arg-type]
    before = int(time.time())
    session = asyncio.run(provider.create_payment(
        "K1", 5000, "CNY", "https://demo.example/api/payments/notify",
        "https://demo.example/order/K1", kind=kind))
    assert hq.calls == []
    assert session.payment_id is None  # HQ names it when it is paid
    assert session.pay_url.startswith("https://hq.example/pay/link/")
    link = verify_payment_link(session.pay_url.rpartition("/")[2], _key_of)
    assert (link.site, link.order_id, link.amount, link.kind) == ("demo", "K1", 5000, kind)
    assert link.notify_url == "https://demo.example/api/payments/notify"
    assert before + PAY_LINK_SECONDS <= link.expires <= int(time.time()) + PAY_LINK_SECONDS


def test_a_wallet_payment_is_a_call_to_hq():
    hq = _Hq()
    provider = SandboxProvider(hq, "https://hq.example")  # type: ignore[arg-type]
    session = asyncio.run(provider.create_payment("K2", 100, "CNY", "n", "r", kind="wallet"))
    assert hq.calls == ["wallet"]
    assert session.payment_id == "P-wallet"
