"""License: the agreement between HQ and a partner (Keygen-like term, grace, renewal)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .common import (
    CATEGORY_RE,
    DNS_LABEL_RE,
    DURATION_RE,
    EMAIL_RE,
    MONEY_RE,
    PERCENT_RE,
    REGION_RE,
    Condition,
    KModel,
    cel,
    checked,
    conditions_field,
    rule,
)

Plan = Literal["basic", "flagship"]
# The life-cycle states (computed by kameng.licensing.lifecycle). A License's status
# shows a state once its term has begun, so Pending is not in the CRD's enum;
# Terminated is reserved.
PENDING, ACTIVE, EXPIRING_SOON, GRACE = "Pending", "Active", "ExpiringSoon", "Grace"
EXPIRED, SUSPENDED, TERMINATED = "Expired", "Suspended", "Terminated"
# Reasons of the License's Ready condition per state; the SubSite's LicenseValid
# condition uses the same words prefixed with "License" (LicenseActive, LicenseInGrace…).
LIFECYCLE_REASONS = {PENDING: "NotYetValid", ACTIVE: "Active", EXPIRING_SOON: "ExpiringSoon",
                     GRACE: "InGrace", EXPIRED: "Expired", SUSPENDED: "Suspended",
                     TERMINATED: "Terminated"}
LicenseState = Literal["Active", "ExpiringSoon", "Grace", "Expired", "Suspended", "Terminated"]
LifeCycleState = Literal["Pending", "Active", "ExpiringSoon", "Grace", "Expired", "Suspended",
                         "Terminated"]
RenewalStrategy = Literal["FromExpiry", "FromNowIfExpired"]
SettlementPeriod = Literal["Daily", "Weekly", "Monthly"]

Category = Annotated[
    str,
    checked(CATEGORY_RE, "a category must be a lowercase DNS label such as 'game-cards'",
            max_length=63, description="Product category (lowercase DNS label)."),
]


class Term(KModel):
    start: Annotated[str, Field(description="Start of the term (RFC 3339).",
                                json_schema_extra={"format": "date-time"})]
    end: Annotated[str, Field(description="End of the term (RFC 3339); must be after start.",
                              json_schema_extra={"format": "date-time"})]


class Renewal(KModel):
    strategy: Annotated[
        RenewalStrategy,
        Field(description="FromExpiry extends from the current end; FromNowIfExpired "
              "restarts from now when the license has already expired."),
    ] = "FromExpiry"


Duration = Annotated[
    str,
    Field(max_length=16, description="A duration in hours, minutes or seconds (e.g. 168h).",
          json_schema_extra=cel(rule(
              f"self.matches(r'{DURATION_RE}') && self != ''",
              "a lead time must be a duration in hours, minutes or seconds such as 720h "
              "(30 days), 168h (7 days) or 24h; days are not accepted"))),
]
# Notices before the end of a term (30, 7 and 1 days), unless the License says otherwise.
DEFAULT_NOTICE_LEADS = ("720h", "168h", "24h")


class Notices(KModel):
    before: Annotated[
        list[Duration],
        Field(max_length=8, description="Lead times before term.end at which the partner "
              "and HQ are notified, once each per term (default 720h, 168h, 24h; an empty "
              "list sends none).",
              json_schema_extra={"x-kubernetes-list-type": "set",
                                 "default": list(DEFAULT_NOTICE_LEADS)}),
    ] = Field(default_factory=lambda: list(DEFAULT_NOTICE_LEADS))
    recipients: Annotated[
        list[Annotated[str, checked(EMAIL_RE, "a notice recipient must be an e-mail "
                                    "address such as ops@partner.example", max_length=254,
                                    description="E-mail address.")]],
        Field(max_length=16, description="Extra e-mail recipients; the SubSite's owner and "
              "the operator's configured HQ address are always told.",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)


class RevenueShare(KModel):
    category: Category
    percent: Annotated[
        str,
        Field(max_length=6, description="Share of gross sales HQ keeps, as a decimal "
              "string from \"0\" to \"100\" (e.g. \"12.5\").",
              json_schema_extra=cel(rule(
                  f"self.matches(r'{PERCENT_RE}') && double(self) <= 100.0",
                  "percent must be a decimal string between \"0\" and \"100\" with at "
                  "most 2 decimals, e.g. \"12.5\"")))
    ]


class Fees(KModel):
    currency: Annotated[
        str, checked(r"^[A-Z]{3}$", "currency must be an ISO 4217 code such as CNY",
                     max_length=3, description="ISO 4217 currency code.")
    ] = "CNY"
    base_annual_fee: Annotated[
        str, checked(MONEY_RE, "baseAnnualFee must be a decimal string with at most 2 "
                     "decimals, e.g. \"12000.00\" (quote it in YAML)",
                     max_length=16, description="Yearly base fee as a decimal string.")
    ] = "0"
    revenue_share: Annotated[
        list[RevenueShare],
        Field(max_length=64, description="HQ's share per category.",
              # The default keeps CEL rules that read the list valid when it is omitted.
              json_schema_extra={"x-kubernetes-list-type": "map",
                                 "x-kubernetes-list-map-keys": ["category"], "default": []}),
    ] = Field(default_factory=list)
    settlement_period: Annotated[
        SettlementPeriod, Field(description="How often statements are produced.")
    ] = "Monthly"


class LicenseSpec(KModel):
    model_config = ConfigDict(json_schema_extra=cel(
        rule("self.fees.revenueShare.all(r, r.category in self.categories)",
             "every fees.revenueShare category must be one of the licensed categories",
             field_path=".fees.revenueShare"),
    ))

    sub_site: Annotated[
        str,
        Field(max_length=56, pattern=DNS_LABEL_RE,
              description="Name of the SubSite this license is for. Immutable.",
              json_schema_extra=cel(
                  rule(f"self.matches(r'{DNS_LABEL_RE}')",
                       "subSite must be a SubSite name: lowercase letters, digits and '-'"),
                  rule("self == oldSelf",
                       "subSite is immutable; create a new License to license another "
                       "sub-site"),
              )),
    ]
    plan: Annotated[Plan, Field(description="basic or flagship; sizes quotas and features.")]
    categories: Annotated[
        list[Category],
        Field(min_length=1, max_length=32, description="Product categories the site may sell.",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ]
    regions: Annotated[
        list[Annotated[str, checked(REGION_RE, "a region must be an ISO 3166-2 code "
                                    "such as CN-31", max_length=6,
                                    description="ISO 3166-2 code.")]],
        Field(max_length=64, description="Regions (ISO 3166-2, e.g. CN-31) the site may "
              "sell to; empty means none.",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    term: Annotated[
        Term,
        Field(description="Licensed period.",
              json_schema_extra=cel(rule(
                  "timestamp(self.end) > timestamp(self.start)",
                  "term.end must be after term.start"))),
    ]
    grace_period: Annotated[
        str,
        Field(max_length=16, description="How long after term.end the storefront stays "
              "read-only before it is suspended (Go duration, e.g. 72h).",
              json_schema_extra=cel(rule(
                  f"self.matches(r'{DURATION_RE}') && self != ''",
                  "gracePeriod must be a duration in hours, minutes or seconds such as "
                  "72h or 90m"))),
    ] = "72h"
    expiring_soon_before: Annotated[
        str,
        Field(max_length=16, description="How long before term.end the license is "
              "ExpiringSoon (default 720h = 30 days).",
              json_schema_extra=cel(rule(
                  f"self.matches(r'{DURATION_RE}') && self != ''",
                  "expiringSoonBefore must be a duration in hours, minutes or seconds such "
                  "as 720h (30 days) or 168h (7 days); days are not accepted"))),
    ] = "720h"
    notices: Annotated[
        Notices, Field(description="When and to whom expiry notices are sent.",
                       json_schema_extra={"default": {}})
    ] = Field(default_factory=Notices)
    renewal: Annotated[
        Renewal, Field(description="How a renewal extends the term.",
                       json_schema_extra={"default": {}})
    ] = Field(default_factory=Renewal)
    fees: Annotated[
        Fees, Field(description="Base fee and revenue share.", json_schema_extra={"default": {}})
    ] = Field(default_factory=Fees)
    suspended: Annotated[
        bool, Field(description="Suspend the sub-site now (kubectl kameng suspend).")
    ] = False
    suspend_reason: Annotated[
        str | None, Field(max_length=256, description="Why the license is suspended.")
    ] = None


class NoticeSent(KModel):
    before: Annotated[str, Field(max_length=16, description="The lead time of the notice.")]
    term_end: Annotated[str, Field(max_length=32, description="The term end it was for.")]
    at: Annotated[str, Field(max_length=32, description="When it was sent (RFC 3339).")]


class LicenseStatus(KModel):
    state: Annotated[LicenseState | None, Field(description="Life-cycle state.")] = None
    expires_at: Annotated[
        str | None, Field(description="Current end of term (RFC 3339).",
                          json_schema_extra={"format": "date-time"})
    ] = None
    grace_until: Annotated[
        str | None, Field(description="End of the grace period (RFC 3339).",
                          json_schema_extra={"format": "date-time"})
    ] = None
    expires_in: Annotated[
        str | None, Field(max_length=32, description="Time left, coarse (29d, 47h, 50m, "
                          "grace 5h, expired); written only when the text changes.")
    ] = None
    notices_sent: Annotated[
        list[NoticeSent],
        Field(max_length=16, description="Expiry notices sent for the current term, so "
              "none is sent twice (a renewal starts a new list)."),
    ] = Field(default_factory=list)
    sequence: Annotated[
        int | None, Field(ge=0, description="Sequence of the last issued license token.")
    ] = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Annotated[list[Condition], conditions_field()]
