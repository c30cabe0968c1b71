"""RolePolicy: roles of a sub-site's staff over the fixed permission vocabulary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

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


class RolePolicySpec(KModel):
    model_config = ConfigDict(json_schema_extra=cel(
        rule("self.roles.all(r, r.permissions.size() > 0)",
             "every role needs at least one permission", field_path=".roles"),
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


class RolePolicyStatus(KModel):
    used_by: Annotated[
        int | None, Field(ge=0, description="How many SubSites reference this policy.")
    ] = None
    role_count: Annotated[int | None, Field(ge=0, description="Number of roles.")] = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Annotated[list[Condition], conditions_field()]
