"""The fixed permission vocabulary of a sub-site's staff and the default policy."""

from __future__ import annotations

from typing import Literal, get_args

Permission = Literal[
    "catalog:read",
    "catalog:write",
    "orders:read",
    "orders:refund",
    "customers:read",
    "customers:manage",
    "marketing:manage",
    "finance:read",
    "finance:withdraw",
    "finance:reconcile",
    "settings:write",
    "members:manage",
    "support:tickets",
    "reports:read",
]
PERMISSIONS: tuple[str, ...] = get_args(Permission)

# HQ's own back-office permissions. Never in a sub-site's RolePolicy (they act on every
# site), so they are a separate vocabulary that only HQ's staff hold.
RISK_REVIEW = "risk:review"  # the review queue: allow / block held orders, snoozes
HqPermission = Literal["risk:review"]
HQ_PERMISSIONS: tuple[str, ...] = get_args(HqPermission)

# SubSite fields and storefront actions that may be put behind HQ approval.
Approvable = Literal[
    "payments.methods",
    "domain",
    "catalog.priceRules",
    "catalog.hiddenProducts",
    "members",
    "finance:withdraw",
    "orders:refund",
]
APPROVABLE: tuple[str, ...] = get_args(Approvable)

# The design's default `standard` policy. site-admin runs the shop but not its system
# settings; operations reads and markets but never touches money; finance moves money
# but never edits the catalogue.
STANDARD_ROLES: dict[str, tuple[str, ...]] = {
    "site-admin": (
        "catalog:read", "catalog:write", "orders:read", "orders:refund",
        "customers:read", "customers:manage", "marketing:manage", "members:manage",
        "support:tickets", "reports:read",
    ),
    "operations": ("catalog:read", "orders:read", "customers:read", "marketing:manage",
                   "support:tickets", "reports:read"),
    "finance": ("orders:read", "finance:read", "finance:withdraw", "finance:reconcile"),
}
STANDARD_APPROVALS: tuple[str, ...] = ("payments.methods", "domain")
