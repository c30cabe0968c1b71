"""RiskPolicy: velocity features and CEL rules the risk worker applies to order streams.

Cluster-scoped, so rules live in Git like every other kind. The API server checks the
shape (names, windows, actions); whether each rule's CEL *compiles* against the event and
the features is checked by the risk worker, which reports a rule that does not compile in
``status.conditions`` (type ``RulesCompiled``, naming the rule and the error) and keeps
running the last valid version of that rule.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .common import (
    DNS_LABEL_RE,
    DURATION_RE,
    Condition,
    KModel,
    cel,
    checked,
    conditions_field,
    rule,
)

# Strongest first: block > freeze > review > allow (the worker takes the maximum).
RiskAction = Literal["allow", "review", "freeze", "block"]
ACTION_RANK: dict[str, int] = {"allow": 0, "review": 1, "freeze": 2, "block": 3}
RiskMode = Literal["enforce", "shadow"]
FeatureKey = Literal["customer", "ip", "site", "product", "category"]
FeatureAgg = Literal["count", "sum"]
# Condition types and reasons of a RiskPolicy's status.
RULES_COMPILED = "RulesCompiled"
REASON_ALL_COMPILED = "AllRulesCompiled"
REASON_RULE_ERROR = "RuleDoesNotCompile"

Duration = Annotated[
    str,
    checked(DURATION_RE, "a duration is hours, minutes and seconds such as '1h', '10m' or "
            "'1h30m'", max_length=16, description="Duration such as 1h, 10m, 1h30m."),
]
Name = Annotated[
    str,
    checked(DNS_LABEL_RE, "a name must be a lowercase DNS label such as 'topup-burst'",
            max_length=63, description="Name (lowercase DNS label)."),
]


class Feature(KModel):
    """A velocity counter: count or sum of amount per key over a sliding window, measured
    in steps of 1/60 of the window (an event counts until between window − window/60 and
    window after it happened)."""

    model_config = ConfigDict(json_schema_extra=cel(
        rule("self.window != '' && self.window != '0s'", "a feature's window must be longer "
             "than zero", field_path=".window"),
    ))

    name: Name
    key: Annotated[FeatureKey, Field(description="What the counter is kept per: customer, "
                                     "ip, site, product or category.")]
    aggregate: Annotated[FeatureAgg, Field(description="count of events or sum of amount "
                                           "(fen).")] = "count"
    window: Duration
    events: Annotated[
        list[Literal["order.created", "order.paid", "order.delivered", "order.refunded",
                     "order.disputed", "withdrawal.requested", "topup"]],
        Field(max_length=8, description="Event types counted (all when empty).",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)


class RiskRule(KModel):
    name: Name
    expression: Annotated[
        str,
        Field(min_length=1, max_length=4096,
              description="CEL over `event` (event, site, amount, customer, ip, product, "
              "category, region, licenseCategories, licenseRegions) and `features` "
              "(feature name → number). True means the rule hits."),
    ]
    action: Annotated[RiskAction, Field(description="allow, review, freeze or block.")]
    reason: Annotated[str, Field(max_length=256, description="Why, shown to reviewers.")] = ""
    mode: Annotated[
        RiskMode | None,
        Field(description="Overrides the policy's mode for this rule (shadow: stored, "
              "never acted on)."),
    ] = None


class SiteEscalation(KModel):
    model_config = ConfigDict(json_schema_extra=cel(
        rule("self.liftAt < self.raiseAt", "liftAt must be below raiseAt, so that a site "
             "does not flap between suspended and released", field_path=".liftAt"),
    ))

    raise_at: Annotated[float, Field(ge=0.001, le=1, description="Fraud rate (blocked + "
                                     "charge-backs over orders) that suspends the site.")]
    lift_at: Annotated[float, Field(ge=0, le=1, description="Fraud rate below which a "
                                    "person may lift the hold (hysteresis).")]
    window: Duration = "24h"
    min_orders: Annotated[int, Field(ge=1, le=1_000_000, description="No escalation "
                                     "below this many orders in the window.")] = 20


class RiskPolicySpec(KModel):
    # Rule and feature names are unique by the list-map keys below.
    mode: Annotated[
        RiskMode, Field(description="enforce: decisions go to the shops; shadow: every hit "
                        "is stored, nothing is acted on."),
    ] = "enforce"
    sites: Annotated[
        list[Annotated[str, Field(max_length=56)]],
        Field(max_length=1024, description="SubSites this policy applies to (all when "
              "empty).", json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    features: Annotated[
        list[Feature],
        Field(max_length=32, description="Velocity counters the rules can read.",
              json_schema_extra={"x-kubernetes-list-type": "map",
                                 "x-kubernetes-list-map-keys": ["name"]}),
    ] = Field(default_factory=list)
    rules: Annotated[
        list[RiskRule],
        Field(min_length=1, max_length=64, description="Rules, all evaluated; the "
              "strongest action wins (block > freeze > review > allow).",
              json_schema_extra={"x-kubernetes-list-type": "map",
                                 "x-kubernetes-list-map-keys": ["name"]}),
    ]
    site_escalation: Annotated[
        SiteEscalation | None,
        Field(description="Suspend a site whose fraud rate crosses raiseAt."),
    ] = None


class RiskPolicyStatus(KModel):
    rule_count: Annotated[int | None, Field(ge=0, description="Rules in the policy.")] = None
    active_rules: Annotated[int | None, Field(ge=0, description="Rules compiled and "
                                              "running.")] = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Annotated[list[Condition], conditions_field()]
