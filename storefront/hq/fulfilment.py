"""Fulfilment: a paid order of a sub-site gets one card key, within the site's license.

HQ trusts no site's word that an order was paid: a key leaves HQ only against a payment
HQ itself recorded as paid, for that site and that order, in the catalogue's currency,
for at least the product's cost, and only for an active product (:func:`refusal`, the
one home of this rule). The check and the allocation run in one transaction holding the
payment row, so a refund cannot slip in between them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kameng.contracts.hq_api import CATALOG_CURRENCY, Fulfilment, FulfilRequest
from kameng.contracts.license_token import LicenseClaims

from ..state import AppState
from .inventory import allocate_key
from .site_auth import ApiRefused

log = logging.getLogger("kameng.storefront.hq")

# Refusal code → HTTP status. Never 409: a sub-site reads 409 as "out of stock" and
# refunds its buyer, which a payment HQ has not seen must not trigger.
STATUS = {
    "unknown_product": 404,
    "product_inactive": 403,
    "out_of_license_scope": 403,
    "payment_not_found": 402,
    "payment_not_paid": 402,
    "payment_wrong_currency": 402,
    "payment_below_cost": 402,
}


def refusal(site: str, order_id: str, product: Mapping[str, Any] | None,
            payment: Mapping[str, Any] | None, claims: LicenseClaims) -> str | None:
    """Why HQ must not hand out a key for ``order_id`` of ``site`` (or None: it may).

    ``product`` is the ``products`` row asked for, ``payment`` HQ's ``payments`` row of
    (site, order) — None when HQ has none.
    """
    if product is None:
        return "unknown_product"
    if not product["active"]:
        return "product_inactive"
    if not claims.allows(product["category"], product["region"]):
        return "out_of_license_scope"
    if payment is None or payment["site"] != site or payment["order_id"] != order_id:
        return "payment_not_found"
    if payment.get("kind", "order") == "topup":  # escrow for a wallet, never a key's price
        return "payment_not_found"
    if payment["status"] != "paid":
        return "payment_not_paid"
    if payment["currency"] != CATALOG_CURRENCY:
        return "payment_wrong_currency"
    if payment["amount_fen"] < product["cost_fen"]:
        return "payment_below_cost"
    return None


async def fulfil(state: AppState, site: str, claims: LicenseClaims, req: FulfilRequest
                 ) -> Fulfilment:
    """The order's key. Raises :class:`ApiRefused` or ``inventory.OutOfStock``."""

    def check(product: Mapping[str, Any] | None, payment: Mapping[str, Any] | None) -> None:
        code = refusal(site, req.order_id, product, payment, claims)
        if code is not None:
            log.warning("fulfilment refused", extra={"site": site, "order": req.order_id,
                                                     "product": req.product_id, "code": code})
            raise ApiRefused(STATUS[code], code)

    key_id, secret = await allocate_key(
        state.pool, state.cipher, site, req.order_id, req.product_id, check
    )
    state.metrics.keys_allocated.inc()
    log.info("key allocated", extra={"site": site, "order": req.order_id, "key_id": key_id})
    return Fulfilment(order_id=req.order_id, key_id=key_id, secret=secret)
