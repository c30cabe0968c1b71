"""The refund rule: what may happen to a buyer's money, as a pure function of the order's
state. The one home of the rule; the shop (back office, sweeps) and HQ (its refund API)
both ask it, so no path can refund what another path would refuse.

- Not paid yet (``created``): nothing to give back.
- Paid, key not delivered (``paid``, ``frozen``): refund.
- Key delivered (``delivered``): the buyer holds the key, so a refund would give them the
  key *and* the money while HQ absorbs the cost and the partner's balance goes negative.
  A request becomes a **dispute** that HQ decides; nobody moves money automatically.
- Finished (``refunded``): nothing to do.
"""

from __future__ import annotations

from typing import Literal

RefundAction = Literal["refund", "dispute", "none"]
REFUND_ACTIONS: tuple[str, ...] = RefundAction.__args__  # type: ignore[attr-defined]

_BY_STATUS: dict[str, RefundAction] = {
    "created": "none",
    "paid": "refund",
    "frozen": "refund",
    "delivered": "dispute",
    "refunded": "none",
}


# The order states a refund may act on (the shop claims and updates only these).
REFUNDABLE_STATUSES: tuple[str, ...] = tuple(
    status for status, action in _BY_STATUS.items() if action == "refund"
)


def refund_action(status: str, key_delivered: bool = False) -> RefundAction:
    """What a refund request may do to an order in ``status``.

    ``key_delivered`` is what the asking side knows beyond the status: HQ knows a key was
    handed out for the order even when the shop never stored it (a lost response), and a
    key handed out always turns a refund into a dispute. An unknown status refunds nothing.
    """
    action = _BY_STATUS.get(status, "none")
    if key_delivered and action == "refund":
        return "dispute"
    return action
