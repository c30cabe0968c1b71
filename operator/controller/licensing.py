"""Whether a SubSite's License lets it sell now, and the token that proves it.

Pure: the caller passes the License it found (from the kopf index) and the time.
The full life cycle (ExpiringSoon, renewals, Events) belongs to the License controller;
this module only answers the SubSite's question.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kameng.api.license import LicenseSpec
from kameng.contracts.license_token import LicenseClaims, evaluate_mode, sign_token
from kameng.licensing.term import format_time as rfc3339
from kameng.licensing.term import parse_duration, parse_time


@dataclass(frozen=True)
class LicenseVerdict:
    valid: bool
    reason: str
    message: str
    state: str | None = None  # the SubSite's view: Active, Grace, Expired, Suspended…
    mode: str = "suspended"  # site-config mode the storefront runs in
    expires_at: str | None = None
    claims: LicenseClaims | None = None
    next_change: datetime | None = None  # when this verdict changes by time alone


def claims_for(site: str, spec: LicenseSpec, sequence: int) -> LicenseClaims:
    end = parse_time(spec.term.end)
    return LicenseClaims(
        site=site, plan=spec.plan, categories=list(spec.categories),
        regions=list(spec.regions), nbf=parse_time(spec.term.start), exp=end,
        graceUntil=end + parse_duration(spec.grace_period),
        suspended=spec.suspended, seq=sequence,
    )


def evaluate(site: str, license_ref: str, spec: LicenseSpec | None, sequence: int,
             now: datetime) -> LicenseVerdict:
    if spec is None:
        return LicenseVerdict(False, "LicenseNotFound",
                              f"License {license_ref!r} does not exist")
    if spec.sub_site != site:
        return LicenseVerdict(False, "LicenseForOtherSite",
                              f"License {license_ref!r} is for sub-site {spec.sub_site!r}, "
                              f"not {site!r}")
    claims = claims_for(site, spec, sequence)
    mode = evaluate_mode(claims, now)
    expires = rfc3339(claims.exp)
    boundaries = [t for t in (claims.nbf, claims.exp, claims.grace_until) if t > now]
    nxt = min(boundaries) if boundaries else None
    common = {"mode": mode, "expires_at": expires, "claims": claims, "next_change": nxt}
    if spec.suspended:
        why = f": {spec.suspend_reason}" if spec.suspend_reason else ""
        return LicenseVerdict(False, "LicenseSuspended", f"License is suspended{why}",
                              state="Suspended", **common)
    if now < claims.nbf:
        return LicenseVerdict(False, "LicenseNotYetValid",
                              f"License term starts at {rfc3339(claims.nbf)}",
                              state="Pending", **common)
    if now < claims.exp:
        return LicenseVerdict(True, "LicenseActive", f"License term covers now (until "
                              f"{expires})", state="Active", **common)
    if now < claims.grace_until:
        return LicenseVerdict(False, "LicenseInGrace",
                              f"License term ended at {expires}; read-only until "
                              f"{rfc3339(claims.grace_until)}", state="Grace", **common)
    return LicenseVerdict(False, "LicenseExpired", f"License term ended at {expires}",
                          state="Expired", **common)


def token_for(verdict: LicenseVerdict, key: Ed25519PrivateKey) -> str:
    """Signed token, or "" without a license. Ed25519 is deterministic, so the same
    claims give the same token and an unchanged license never rewrites its Secret."""
    return sign_token(verdict.claims, key) if verdict.claims is not None else ""
