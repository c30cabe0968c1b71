"""ConfigMap ``storefront-config``: the site-config contract rendered from the spec."""

from __future__ import annotations

from typing import Any

from kameng.contracts.siteconfig import CONFIGMAP_KEY, CONFIGMAP_NAME, SiteConfig

from .context import APP_NAME, SiteContext, meta


def site_config(ctx: SiteContext) -> SiteConfig:
    spec = ctx.spec
    lic = ctx.license
    roles = {r.name: list(r.permissions) for r in ctx.role_policy.roles} \
        if ctx.role_policy else {}
    return SiteConfig.model_validate({
        "site": ctx.name,
        "displayName": spec.display_name,
        "branding": {
            "title": spec.branding.title or spec.display_name,
            "logoUrl": spec.branding.logo_url or "",
            "primaryColor": spec.branding.primary_color,
            "locale": spec.branding.locale,
        },
        "categories": list(lic.categories) if lic else [],
        "regions": list(lic.regions) if lic else [],
        "priceRules": [{"category": r.category, "markupPercent": r.markup_percent}
                       for r in spec.catalog.price_rules],
        "hiddenProducts": list(spec.catalog.hidden_products),
        "roles": roles,
        "mode": ctx.mode,
        "hqUrl": ctx.platform.hq_url,
        "hqPublicUrl": ctx.platform.hq_public_url,
        "hqPublicKey": ctx.platform.hq_public_key,
        "payments": {"methods": list(spec.payments.methods)},
        "members": [m.model_dump(by_alias=True, exclude_none=True) for m in spec.members],
        "approvals": list(ctx.role_policy.approvals) if ctx.role_policy else [],
        "approvalLimits": ctx.role_policy.approval_limits.model_dump(by_alias=True)
        if ctx.role_policy and ctx.role_policy.approval_limits else {},
    })


def config_map(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(ctx, CONFIGMAP_NAME, APP_NAME),
        "data": {CONFIGMAP_KEY: site_config(ctx).to_json()},
    }
