"""Hypothesis strategies for what the API server accepts: SubSite, License and RolePolicy
specs as JSON (camelCase, as kubectl would send them), within the CRD's bounds and rules.

Every generated object passes the pydantic model (the CRDs are generated from it), so a
failure downstream is the reconcile's fault, not the generator's. They lean to the edges:
longest names and lists, terms in year 1970 or 9999, odd Unicode in free text (controls,
right-to-left marks, emoji, NUL). Shared by the property tests and the integration batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from hypothesis import strategies as st

from kameng.api.license import LicenseSpec
from kameng.api.permissions import PERMISSIONS
from kameng.api.rolepolicy import KubernetesAccess, RolePolicySpec
from kameng.api.subsite import Locale, PaymentMethod, SubSiteSpec


def dns_label(max_len: int = 63, min_len: int = 1) -> st.SearchStrategy[str]:
    ends = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789")
    mid = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=max(0, max_len - 2))
    one = ends.map(str) if min_len <= 1 else st.nothing()
    more = st.builds(lambda a, m, b: a + m + b, ends, mid, ends) if max_len >= 2 else st.nothing()
    return st.one_of(one, more, st.just("a" * max_len)).filter(
        lambda s: min_len <= len(s) <= max_len)


def odd_text(min_size: int = 0, max_size: int = 128) -> st.SearchStrategy[str]:
    """Any Unicode a JSON string may hold (no lone surrogates), biased to the odd ones."""
    return st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), min_size=min_size,
                max_size=max_size),
        st.sampled_from(["\u202e" + "x" * (max_size - 1), "😀" * max_size, "\x00" * max_size,
                         "卡盟" * (max_size // 2), "<script>", "{{ 7*7 }}", "'; DROP --"])
        .map(lambda s: s[:max_size]).filter(lambda s: len(s) >= min_size),
    )


def rfc3339(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


EDGE_TIMES = st.one_of(
    st.sampled_from([datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 11, 30, tzinfo=UTC)]),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 1),
                 timezones=st.just(UTC)),
)


@st.composite
def term(draw: st.DrawFn) -> dict[str, str]:
    start = draw(EDGE_TIMES)
    length = draw(st.one_of(st.just(timedelta(seconds=1)),
                            st.timedeltas(timedelta(seconds=1), timedelta(days=3650))))
    last = datetime(9999, 12, 31, tzinfo=UTC)
    end = start + length if length < last - start else last
    if end <= start:
        start = end - timedelta(seconds=1)
    return {"start": rfc3339(start), "end": rfc3339(end)}


DURATIONS = st.one_of(
    st.sampled_from(["72h", "1s", "0s", "90m", "1h30m15s", "999999999999h",
                     "99999999999999999999s"]),
    st.integers(0, 10**6).map(lambda n: f"{n}h"),
    st.integers(0, 10**12).map(lambda n: f"{n}s"),
)
MONEY = st.one_of(st.sampled_from(["0", "0.01", "999999999999.99"]),
                  st.decimals(0, 10**6, places=2).map(str))
# The CRD's CEL rules (not mirrored in the pydantic model) bound these; mirrored here.
PERCENT = st.one_of(st.sampled_from(["0", "100", "99.99"]),
                    st.decimals(0, 100, places=2).map(str))
MARKUP = st.one_of(st.sampled_from(["0", "500", "499.99"]),
                   st.decimals(0, 500, places=2).map(str))


@st.composite
def license_spec(draw: st.DrawFn, site: str | None = None) -> dict[str, Any]:
    cats = draw(st.lists(dns_label(63), min_size=1, max_size=32, unique=True))
    shares = draw(st.lists(st.sampled_from(cats), max_size=len(cats), unique=True))
    region = st.from_regex(r"\A[A-Z]{2}-[A-Z0-9]{1,3}\Z")
    spec = {
        "subSite": site or draw(dns_label(56)),
        "plan": draw(st.sampled_from(["basic", "flagship"])),
        "categories": cats,
        "regions": draw(st.lists(region, max_size=64, unique=True)),
        "term": draw(term()),
        "gracePeriod": draw(DURATIONS),
        "renewal": {"strategy": draw(st.sampled_from(["FromExpiry", "FromNowIfExpired"]))},
        "fees": {"currency": draw(st.sampled_from(["CNY", "USD", "XXX"])),
                 "baseAnnualFee": draw(MONEY),
                 "revenueShare": [{"category": c, "percent": draw(PERCENT)} for c in shares],
                 "settlementPeriod": draw(st.sampled_from(["Daily", "Weekly", "Monthly"]))},
        "suspended": draw(st.booleans()),
    }
    if draw(st.booleans()):
        spec["suspendReason"] = draw(odd_text(0, 256))
    return _valid(LicenseSpec, spec, draw)


@st.composite
def rolepolicy_spec(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(dns_label(63), min_size=1, max_size=32, unique=True))
    roles = []
    for n in names:
        role: dict[str, Any] = {"name": n, "permissions": draw(
            st.lists(st.sampled_from(PERMISSIONS), unique=True, min_size=1,
                     max_size=len(PERMISSIONS)))}
        if draw(st.booleans()):
            role["kubernetes"] = {"access": draw(st.sampled_from(get_args(KubernetesAccess)))}
        roles.append(role)
    return _valid(RolePolicySpec, {"roles": roles}, draw)


EMAIL = st.builds(lambda a, b: f"{a}@{b}.example", dns_label(40), dns_label(40))


@st.composite
def subsite_spec(draw: st.DrawFn, license_ref: str | None = None,
                 role_policy_ref: str | None = None,
                 roles: list[str] | None = None) -> dict[str, Any]:
    members = draw(st.lists(dns_label(63), max_size=64, unique=True))
    role_names = roles or [draw(dns_label(63))]
    spec: dict[str, Any] = {
        "displayName": draw(odd_text(1, 128)),
        "owner": {"name": draw(odd_text(1, 128)), "email": draw(EMAIL)},
        "licenseRef": license_ref or draw(dns_label(63)),
        "rolePolicyRef": role_policy_ref or draw(dns_label(63)),
        "domain": draw(st.lists(dns_label(20), min_size=2, max_size=8)
                       .map(lambda parts: ".".join(parts)[:253].strip(".-") or "a")),
        "branding": {"title": draw(odd_text(0, 64)),
                     "primaryColor": draw(st.from_regex(r"\A#[0-9a-fA-F]{6}\Z")),
                     "locale": draw(st.sampled_from(get_args(Locale)))},
        "catalog": {
            "priceRules": [{"category": c, "markupPercent": draw(MARKUP)}
                           for c in draw(st.lists(dns_label(63), max_size=64, unique=True))],
            "hiddenProducts": draw(st.lists(odd_text(1, 64), max_size=512, unique=True)),
        },
        "payments": {"methods": draw(st.lists(st.sampled_from(get_args(PaymentMethod)),
                                              min_size=1, unique=True))},
        "members": [{"name": m, "email": draw(EMAIL),
                     "role": draw(st.sampled_from(role_names))} for m in members],
        "storefront": {"replicas": draw(st.integers(1, 20))},
        "database": {"reclaimPolicy": draw(st.sampled_from(["Retain", "Delete"]))},
    }
    if draw(st.booleans()):
        spec["tls"] = draw(st.one_of(st.builds(lambda n: {"secretName": n}, dns_label(63)),
                                     st.builds(lambda n: {"clusterIssuer": n}, dns_label(63))))
    return _valid(SubSiteSpec, spec, draw)


def _valid(model: type, spec: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    # The generator aims inside the schema; anything the model still refuses (a rule this
    # file does not mirror) is dropped rather than tested as "accepted".
    from hypothesis import assume
    from pydantic import ValidationError

    try:
        model.model_validate(spec)
    except ValidationError:
        assume(False)
    return spec
