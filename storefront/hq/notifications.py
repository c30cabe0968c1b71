"""Payment notifications from HQ to the sub-site that opened the payment.

Signed with the site's notification key (:func:`kameng.contracts.hq_auth.notification_key`,
from the site-credential registry; the contract's HMAC); retried here a few times and
later by the sweeper until the sub-site answers 2xx.
"""

from __future__ import annotations

import asyncio
import logging

from kameng.contracts.hq_api import PaymentNotification, notification_headers

from ..state import AppState
from ..sweeps import sweep_forever
from .payments import Payment

log = logging.getLogger("kameng.storefront.hq")


def notification_for(payment: Payment) -> PaymentNotification:
    return PaymentNotification(
        notification_id=f"{payment['id']}:paid",
        payment_id=payment["id"],
        site=payment["site"],
        order_id=payment["order_id"],
        amount=payment["amount_fen"],
        currency=payment["currency"],
        status="paid",
    )


async def notify_payment(state: AppState, payment: Payment, attempts: int = 3) -> bool:
    """POST the signed notification; True once the sub-site answered 2xx."""
    entry = state.credentials.get(payment["site"]) if state.credentials else None
    if entry is None:  # deleted site (or registry not yet mounted): the sweeper retries
        log.warning("no credential to sign a notification", extra={"payment": payment["id"]})
        return False
    secret = entry.notification_key()
    body = notification_for(payment).to_json()
    for attempt in range(attempts):
        try:
            r = await state.http.post(
                payment["notify_url"], content=body, headers=notification_headers(secret, body),
                timeout=30,
            )
            if 200 <= r.status_code < 300:
                async with state.pool.connection() as conn:
                    await conn.execute(
                        "UPDATE payments SET notified_at = now() WHERE id = %s", (payment["id"],)
                    )
                return True
            log.warning(
                "notification refused", extra={"payment": payment["id"], "status": r.status_code}
            )
        except Exception as exc:  # any transport error means "retry later"
            log.warning(
                "notification failed", extra={"payment": payment["id"], "error": type(exc).__name__}
            )
        if attempt + 1 < attempts:
            await asyncio.sleep(0.5 * (attempt + 1))
    # Back off, so a site that never answers is re-sent ever more rarely (capped at an hour)
    # and the sweep reaches every other payment first.
    async with state.pool.connection() as conn:
        await conn.execute(
            "UPDATE payments SET notify_attempts = notify_attempts + 1, next_notify_at = now()"
            " + make_interval(secs => least(5 * power(2, least(notify_attempts, 12)), 3600))"
            " WHERE id = %s",
            (payment["id"],),
        )
    return False


# Due notifications, longest-waiting first, skipping rows another HQ replica is taking; the
# claim pushes each row's next time ahead, so two replicas never send one at once.
_CLAIM_DUE = """
UPDATE payments p SET next_notify_at = now() + interval '60 seconds'
FROM (
    SELECT id FROM payments
    WHERE status = 'paid' AND notified_at IS NULL AND paid_at < now() - interval '10 seconds'
      AND coalesce(next_notify_at, paid_at) <= now()
    ORDER BY coalesce(next_notify_at, paid_at), id
    LIMIT 50
    FOR UPDATE SKIP LOCKED
) due
WHERE p.id = due.id
RETURNING p.*
"""


async def notification_sweeper(state: AppState, interval: float = 5.0) -> None:
    """Re-send notifications of paid payments whose notification never got a 2xx."""
    await sweep_forever(
        state, interval, _CLAIM_DUE,
        lambda st, row: notify_payment(st, row, attempts=1), "notification")
