"""Tiered rights on the operator's side: what a SubSite asks for that its License's plan does
not unlock (the table is :mod:`kameng.contracts.plans`). Pure; the reconcile reports the
answer in status (Stalled, ``PlanFeatureMissing``) and the Ingress builder leaves the
locked part out, so nothing a plan lacks is served."""

from __future__ import annotations

from kameng.api import conditions as c
from kameng.api.license import LicenseSpec
from kameng.api.subsite import SubSiteSpec
from kameng.contracts.plans import lowest_plan_with, plan_allows


def plan_problem(spec: SubSiteSpec, license_ref: str,
                 lic: LicenseSpec | None) -> tuple[str, str] | None:
    """(reason, message) when the SubSite uses a feature its License's plan lacks."""
    if lic is None:
        return None  # no License: the license verdict already says why
    if spec.tls is not None and not plan_allows(lic.plan, "custom_domain"):
        return c.R_PLAN_FEATURE_MISSING, (
            f"spec.tls (the site's own TLS certificate for {spec.domain}) needs plan "
            f"{lowest_plan_with('custom_domain')}, but License {license_ref!r} has plan "
            f"{lic.plan!r}: the Ingress serves {spec.domain} without it. Remove spec.tls, "
            f"or promote the License (spec.plan: {lowest_plan_with('custom_domain')})")
    return None
