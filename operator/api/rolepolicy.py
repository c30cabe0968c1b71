"""RolePolicy: roles of a sub-site's staff over the fixed permission vocabulary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import DNS_LABEL_RE, Condition, KModel, cel, checked, conditions_field, rule
from .permissions import Approvable, Permission

KubernetesAccess = Literal["none", "view", "operate"]


class RoleKubernetes(KModel):
    access: Annotated[
        KubernetesAccess,
        Field(description="What members with a kubernetesUser may do in the sub-site's "
              "namespace: none; view (read pods, logs, events, deployments); operate "
              "(view plus restarting and scaling the storefront). Never secrets."),
    ] = "none"


class Role(KModel):
    name: Annotated[
        str, checked(DNS_LABEL_RE, "a role name must be a lowercase DNS label such as "
                     "'site-admin'", max_length=63, description="Role name.")
    ]
    permissions: Annotated[
        list[Permission],
        Field(max_length=len(Permission.__args__),
              description="Permissions from the fixed vocabulary.",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ]
    kubernetes: Annotated[
        RoleKubernetes | None,
        Field(description="Kubernetes access for members of this role."),
    ] = None


# The largest limit a person may set: 10^12 fen (10 billion yuan), far above any real
# withdrawal or refund, and well inside what JSON and PostgreSQL's bigint hold exactly.
MAX_APPROVAL_LIMIT_FEN = 10**12


class ApprovalLimits(KModel):
    """Amounts (in fen, 1/100 yuan) up to which a listed money action needs no approval."""

    model_config = ConfigDict(json_schema_extra=cel(
        rule(f"!has(self.withdrawalFen) || (self.withdrawalFen >= 0 && "
             f"self.withdrawalFen <= {MAX_APPROVAL_LIMIT_FEN})",
             "withdrawalFen is an amount in fen (1/100 yuan) from 0 to 1000000000000",
             field_path=".withdrawalFen"),
        rule(f"!has(self.refundFen) || (self.refundFen >= 0 && "
             f"self.refundFen <= {MAX_APPROVAL_LIMIT_FEN})",
             "refundFen is an amount in fen (1/100 yuan) from 0 to 1000000000000",
             field_path=".refundFen"),
    ))

    withdrawal_fen: Annotated[
        int | None,
        Field(ge=0, le=MAX_APPROVAL_LIMIT_FEN,
              description="With 'finance:withdraw' in approvals: a withdrawal of more than "
              "this many fen waits for HQ's approval (its amount reserved meanwhile); one "
              "up to it is made at once. Unset: every withdrawal waits."),
    ] = None
    refund_fen: Annotated[
        int | None,
        Field(ge=0, le=MAX_APPROVAL_LIMIT_FEN,
              description="With 'orders:refund' in approvals: a refund of more than this "
              "many fen waits for HQ's approval (not executed meanwhile); one up to it is "
              "made at once. Unset: every refund waits."),
    ] = None


class RolePolicySpec(KModel):
    model_config = ConfigDict(json_schema_extra=cel(
        rule("self.roles.all(r, r.permissions.size() > 0)",
             "every role needs at least one permission", field_path=".roles"),
        rule("!has(self.approvalLimits) || !has(self.approvalLimits.withdrawalFen) || "
             "(has(self.approvals) && 'finance:withdraw' in self.approvals)",
             "approvalLimits.withdrawalFen only has an effect when approvals lists "
             "'finance:withdraw': add it there, or remove the limit",
             field_path=".approvalLimits.withdrawalFen"),
        rule("!has(self.approvalLimits) || !has(self.approvalLimits.refundFen) || "
             "(has(self.approvals) && 'orders:refund' in self.approvals)",
             "approvalLimits.refundFen only has an effect when approvals lists "
             "'orders:refund': add it there, or remove the limit",
             field_path=".approvalLimits.refundFen"),
    ))

    roles: Annotated[
        list[Role],
        Field(min_length=1, max_length=32, description="Roles staff members can hold.",
              json_schema_extra={"x-kubernetes-list-type": "map",
                                 "x-kubernetes-list-map-keys": ["name"]}),
    ]
    approvals: Annotated[
        list[Approvable],
        Field(max_length=16, description="SubSite fields and storefront actions that "
              "need HQ approval before they take effect.",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    approval_limits: Annotated[
        ApprovalLimits | None,
        Field(description="Amounts up to which the money actions listed in approvals "
              "('finance:withdraw', 'orders:refund') are made at once; above them they "
              "wait for HQ."),
    ] = None

    @model_validator(mode="after")
    def _limits_need_their_approval(self) -> RolePolicySpec:
        # The CRD's CEL rules above, in Python too (both sides refuse the same input).
        lim = self.approval_limits
        for action, value in (("finance:withdraw", lim and lim.withdrawal_fen),
                              ("orders:refund", lim and lim.refund_fen)):
            if value is not None and action not in self.approvals:
                raise ValueError(f"an approval limit for {action!r} only has an effect when "
                                 "approvals lists it")
        return self


class RolePolicyStatus(KModel):
    used_by: Annotated[
        int | None, Field(ge=0, description="How many SubSites reference this policy.")
    ] = None
    role_count: Annotated[int | None, Field(ge=0, description="Number of roles.")] = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Annotated[list[Condition], conditions_field()]
