"""Everything the API server accepts is handled: valid SubSite/License/RolePolicy objects,
extremes included, through the pure parts of the reconcile, the License status, the life
cycle and the license token: no exception escapes, and what comes out fits the CRDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kameng.api.license import LicenseSpec, LicenseStatus
from kameng.api.rolepolicy import RolePolicySpec, RolePolicyStatus
from kameng.api.subsite import SubSiteSpec, SubSiteStatus
from kameng.children.build import build_children
from kameng.children.context import SiteContext
from kameng.contracts.license_token import (
    evaluate_mode,
    generate_signing_key,
    public_key_to_b64,
    verify_token,
)
from kameng.contracts.siteconfig import SiteConfig
from kameng.controller.agreements import license_status, rolepolicy_status
from kameng.controller.status import Observation, compute
from kameng.licensing.lifecycle import Terms, state_at
from kameng.licensing.verdict import token_for, verdict_for
from tests.support.strategies import (
    EDGE_TIMES,
    dns_label,
    license_spec,
    rolepolicy_spec,
    subsite_spec,
)

KEY = generate_signing_key()
PUB = public_key_to_b64(KEY)
PROPS = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
NOW = st.one_of(EDGE_TIMES, st.just(datetime.now(UTC)))


@st.composite
def site_objects(draw: st.DrawFn) -> tuple[str, dict, dict, dict]:
    name = draw(dns_label(56))
    rp = draw(rolepolicy_spec())
    roles = [r["name"] for r in rp["roles"]]
    # Sometimes the License is for another site: the SubSite must say so, not crash.
    lic = draw(license_spec(site=name if draw(st.booleans()) else None))
    ss = draw(subsite_spec(license_ref=name, role_policy_ref="rp", roles=roles))
    return name, ss, lic, rp


@PROPS
@given(site_objects(), NOW, st.integers(0, 2**62))
def test_reconcile_parts_take_anything_the_api_server_accepts(objs, now, seq):
    name, ss, lic, rp = objs
    spec, lic_spec = SubSiteSpec.model_validate(ss), LicenseSpec.model_validate(lic)
    verdict = verdict_for(name, name, lic_spec, seq, now)
    ctx = SiteContext(name=name, uid="uid", spec=spec,
                      license=lic_spec if verdict.claims is not None else None,
                      role_policy=RolePolicySpec.model_validate(rp), mode=verdict.mode, now=now)
    children = build_children(ctx)
    assert all(c["metadata"]["name"] for c in children)
    cm = next(c for c in children if c["kind"] == "ConfigMap")
    SiteConfig.from_json(cm["data"]["site.json"])  # the shop can read what the operator wrote
    status = compute(Observation(
        generation=1, namespace=ctx.namespace, url=ctx.url, license=verdict,
        database_ready=True, database_message="ok", deployment=None,
        desired_replicas=spec.storefront.replicas, now=now), None)
    SubSiteStatus.model_validate(status)  # fits the CRD: nothing pruned, nothing refused
    token = token_for(verdict, KEY, None, now)
    if token:
        claims = verify_token(token, PUB)
        assert claims.site == name
        evaluate_mode(claims, now)


@PROPS
@given(license_spec(), NOW, st.integers(1, 2**62))
def test_license_status_and_life_cycle_take_any_license(lic, now, generation):
    status = license_status(lic, generation, None, now)
    LicenseStatus.model_validate(status)
    lc = state_at(Terms.from_spec(LicenseSpec.model_validate(lic)), now)
    assert lc.next_change is None or lc.next_change > now
    # And again a moment later: the status is a pure function (same input, same output).
    assert license_status(lic, generation, status, now) == status
    state_at(Terms.from_spec(LicenseSpec.model_validate(lic)), now + timedelta(days=1))


@PROPS
@given(rolepolicy_spec(), st.integers(0, 10**6))
def test_rolepolicy_status_takes_any_policy(rp, used_by):
    RolePolicyStatus.model_validate(rolepolicy_status(rp, 1, used_by, None, datetime.now(UTC)))
