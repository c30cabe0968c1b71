"""Fulfilment: a paid order of a sub-site gets one card key, within the site's license."""

from __future__ import annotations

import logging

from kameng.contracts.hq_api import Fulfilment, FulfilRequest
from kameng.contracts.license_token import LicenseClaims

from ..state import AppState
from .inventory import allocate_key
from .site_auth import ApiRefused

log = logging.getLogger("kameng.storefront.hq")


async def fulfil(state: AppState, site: str, claims: LicenseClaims, req: FulfilRequest
                 ) -> Fulfilment:
    """The order's key. Raises :class:`ApiRefused` or ``inventory.OutOfStock``."""
    async with state.pool.connection() as conn:
        product = await (
            await conn.execute(
                "SELECT category, region, active FROM products WHERE id = %s", (req.product_id,)
            )
        ).fetchone()
    if product is None:
        raise ApiRefused(404, "unknown_product")
    if not claims.allows(product["category"], product["region"]):
        log.warning(
            "fulfilment outside license scope",
            extra={"site": site, "product": req.product_id, "category": product["category"]},
        )
        raise ApiRefused(403, "out_of_license_scope")
    key_id, secret = await allocate_key(
        state.pool, state.cipher, site, req.order_id, req.product_id
    )
    state.metrics.keys_allocated.inc()
    log.info("key allocated", extra={"site": site, "order": req.order_id, "key_id": key_id})
    return Fulfilment(order_id=req.order_id, key_id=key_id, secret=secret)
