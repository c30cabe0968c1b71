"""Whether a SubSite's License lets it sell now, and the token that proves it.

Pure: the caller passes the License it found (from the kopf index) and the time; the
state comes from :mod:`kameng.licensing.lifecycle`, like the License's own status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kameng.api.conditions import R_LICENSE_FOR_OTHER_SITE, R_LICENSE_NOT_FOUND
from kameng.api.holds import Hold
from kameng.api.license import LicenseSpec, LifeCycleState
from kameng.contracts.license_token import LicenseClaims, LicenseMode, sign_token

from .lifecycle import Terms, state_at
from .sequence import next_sequence
from .term import format_time


@dataclass(frozen=True)
class LicenseVerdict:
    valid: bool
    reason: str
    message: str
    state: LifeCycleState | None = None  # None: no usable License at all
    mode: LicenseMode = "suspended"  # site-config mode the storefront runs in
    expires_at: str | None = None
    claims: LicenseClaims | None = None
    next_change: datetime | None = None  # when this verdict changes by time alone


def claims_for(terms: Terms, spec: LicenseSpec, sequence: int) -> LicenseClaims:
    # A suspending hold is a suspension the shop must see in its signed token too.
    # A terminated License likewise (a SubSite re-created on it must not sell).
    suspended = terms.suspended or any(h.suspends for h in terms.holds) or \
        terms.terminated_at is not None
    return LicenseClaims(
        site=terms.site, plan=spec.plan, categories=list(spec.categories),
        regions=list(spec.regions), nbf=terms.start, exp=terms.end,
        graceUntil=terms.grace_until, suspended=suspended, seq=sequence,
        warnAt=terms.warn_at,
    )


def verdict_for(site: str, license_ref: str, spec: LicenseSpec | None, sequence: int,
                now: datetime, holds: tuple[Hold, ...] = (),
                terminated_at: datetime | None = None) -> LicenseVerdict:
    if spec is None:
        return LicenseVerdict(False, R_LICENSE_NOT_FOUND,
                              f"License {license_ref!r} does not exist")
    if spec.sub_site != site:
        return LicenseVerdict(False, R_LICENSE_FOR_OTHER_SITE,
                              f"License {license_ref!r} is for sub-site {spec.sub_site!r}, "
                              f"not {site!r}")
    terms = Terms.from_spec(spec, holds, terminated_at)
    lc = state_at(terms, now)
    return LicenseVerdict(
        valid=lc.selling, reason=f"License{lc.reason}", message=f"License {lc.message}",
        state=lc.state, mode=lc.mode, expires_at=format_time(terms.end),
        claims=claims_for(terms, spec, sequence), next_change=lc.next_change)


def token_for(verdict: LicenseVerdict, key: Ed25519PrivateKey,
              previous: LicenseClaims | None, now: datetime) -> str:
    """Signed token, or "" without a license. ``previous``: the claims of the token the
    site holds now; the sequence grows from it (:mod:`.sequence`). Ed25519 is
    deterministic, so unchanged claims give the same token and the Secret is not
    rewritten."""
    if verdict.claims is None:
        return ""
    seq = next_sequence(verdict.claims, previous, now)
    return sign_token(verdict.claims.model_copy(update={"seq": seq}), key)
