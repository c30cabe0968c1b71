"""Site-config contract: the JSON the operator writes into ConfigMap ``storefront-config``.

One definition, imported by the operator (which renders it) and by the storefront
(which reads it). JSON keys are camelCase like the CRDs; Python attributes are
snake_case. Load with :func:`load_site_config`:

* ``KAMENG_SITE_CONFIG`` — the JSON itself (inline), or
* ``KAMENG_SITE_CONFIG_FILE`` — path to the JSON file (default: where the pod mounts
  the ConfigMap's key, see :mod:`kameng.contracts.pod`).

The rest of what a storefront pod receives (Secrets, mounts, env) is the pod contract,
:mod:`kameng.contracts.pod`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from kameng.api.permissions import PERMISSIONS as _PERMISSIONS
from kameng.api.permissions import STANDARD_ROLES, Permission

from .pod import (
    CONFIGMAP_KEY,
    CONFIGMAP_NAME,
    DEFAULT_CONFIG_PATH,
    SITE_CONFIG_ENV,
    SITE_CONFIG_FILE_ENV,
)

__all__ = [
    "CONFIGMAP_KEY",
    "CONFIGMAP_NAME",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_ROLES",
    "PERMISSIONS",
    "Branding",
    "Member",
    "Payments",
    "Permission",
    "PriceRule",
    "SiteConfig",
    "SiteConfigError",
    "SiteMode",
    "load_site_config",
]

# One vocabulary and one default policy for every side: the CRD schema, the operator
# and the storefront all read them from kameng.api.permissions.
PERMISSIONS: tuple[str, ...] = _PERMISSIONS
#: The ``standard`` RolePolicy shipped by default (docs/architecture.md).
DEFAULT_ROLES: dict[str, list[str]] = {k: list(v) for k, v in STANDARD_ROLES.items()}

SiteMode = Literal["normal", "readOnly", "suspended"]
Locale = Literal["zh-CN", "en"]


class SiteConfigError(ValueError):
    """The site config is missing or invalid (message never contains secret values)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class Branding(_Model):
    title: str = ""
    logo_url: str = ""
    primary_color: Annotated[str, Field(pattern=r"^(#[0-9a-fA-F]{3,8})?$")] = "#c0392b"
    locale: Locale = "zh-CN"


class PriceRule(_Model):
    category: str
    markup_percent: Decimal = Decimal(0)

    @field_validator("markup_percent", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        # JSON numbers arrive as float; go through str so 12.5 stays exactly 12.5.
        return str(v) if isinstance(v, float) else v


class Payments(_Model):
    methods: list[str] = Field(default_factory=lambda: ["sandbox"])


class Member(_Model):
    name: str
    email: str
    role: str
    kubernetes_user: str | None = None


# The storefront actions of RolePolicy.spec.approvals that move money, and the field of
# ApprovalLimits that says up to which amount (fen) each one needs no approval.
MONEY_ACTIONS: dict[str, str] = {"finance:withdraw": "withdrawal_fen",
                                 "orders:refund": "refund_fen"}


class ApprovalLimits(_Model):
    withdrawal_fen: int | None = None
    refund_fen: int | None = None


class SiteConfig(_Model):
    schema_version: int = 1
    site: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    display_name: str = ""
    branding: Branding = Field(default_factory=Branding)
    categories: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    price_rules: list[PriceRule] = Field(default_factory=list)
    hidden_products: list[str] = Field(default_factory=list)
    roles: dict[str, list[Permission]] = Field(default_factory=dict)
    mode: SiteMode = "normal"
    hq_url: str = ""
    hq_public_url: str = ""  # HQ's pay pages, as customers reach them ("" = hq_url)
    hq_public_key: str = ""
    payments: Payments = Field(default_factory=Payments)
    members: list[Member] = Field(default_factory=list)
    # The RolePolicy's ``approvals``: changes the back office sends to HQ as requests.
    approvals: list[str] = Field(default_factory=list)
    # The RolePolicy's ``approvalLimits`` (see :meth:`needs_hq_approval`).
    approval_limits: ApprovalLimits = Field(default_factory=ApprovalLimits)

    @field_validator("roles", mode="before")
    @classmethod
    def _roles_from_list(cls, v: object) -> object:
        # Accept the RolePolicy shape [{name, permissions}] as well as {name: [perms]}.
        if isinstance(v, list):
            return {r["name"]: list(r.get("permissions", [])) for r in v}
        return v

    def permissions_for(self, role: str) -> frozenset[str]:
        """Permissions of ``role``; an unknown role has none (deny by default)."""
        return frozenset(self.roles.get(role, ()))

    def needs_hq_approval(self, action: str, amount_fen: int) -> bool:
        """The one rule: a money action (:data:`MONEY_ACTIONS`) of ``amount_fen`` waits for
        HQ when the RolePolicy lists it and the amount is above its limit (no limit: every
        amount waits). Unlisted: never."""
        if action not in self.approvals:
            return False
        limit = getattr(self.approval_limits, MONEY_ACTIONS[action])
        return limit is None or amount_fen > limit

    def markup_for(self, category: str) -> Decimal:
        """Markup percent of ``category``; the last matching rule wins, ``*`` is a fallback."""
        found: Decimal | None = None
        fallback = Decimal(0)
        for rule in self.price_rules:
            if rule.category == category:
                found = rule.markup_percent
            elif rule.category == "*":
                fallback = rule.markup_percent
        return found if found is not None else fallback

    def to_json(self) -> str:
        """Canonical JSON (camelCase, sorted keys) — stable, so its checksum can roll pods."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, ensure_ascii=False
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SiteConfig:
        try:
            return cls.model_validate_json(text)
        except ValueError as exc:
            raise SiteConfigError(f"invalid site config: {exc}") from exc


def load_site_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> SiteConfig:
    """Load the site config from ``path``, else ``KAMENG_SITE_CONFIG`` (inline JSON), else
    ``KAMENG_SITE_CONFIG_FILE`` / the default mount path."""
    env = os.environ if env is None else env
    if path is None:
        inline = env.get(SITE_CONFIG_ENV)
        if inline:
            return SiteConfig.from_json(inline)
        path = env.get(SITE_CONFIG_FILE_ENV, DEFAULT_CONFIG_PATH)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteConfigError(f"cannot read site config {p}: {exc.strerror}") from exc
    return SiteConfig.from_json(text)
