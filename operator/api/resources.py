"""The three kinds of kameng.io/v1alpha1 and their CRD metadata (names, columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .common import GROUP
from .license import LicenseSpec, LicenseStatus
from .names import MAX_SITE_NAME_LENGTH, RESERVED_PREFIXES, RESERVED_SITE_NAMES
from .riskpolicy import RiskPolicySpec, RiskPolicyStatus
from .rolepolicy import RolePolicySpec, RolePolicyStatus
from .subsite import SubSiteSpec, SubSiteStatus


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[dict[str, Any], ...]
    # Rules on the whole object, e.g. over metadata.name.
    root_rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _col(name: str, path: str, type_: str = "string", description: str = "",
         priority: int = 0) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if description:
        c["description"] = description
    if priority:
        c["priority"] = priority
    return c


_READY = _col("Ready", '.status.conditions[?(@.type=="Ready")].status',
              description="Ready condition")
_AGE = _col("Age", ".metadata.creationTimestamp", "date")

SUBSITE = Kind(
    kind="SubSite",
    plural="subsites",
    singular="subsite",
    short_names=("ss",),
    spec=SubSiteSpec,
    status=SubSiteStatus,
    description="A partner's storefront (分站): namespace, database, secrets, Deployment "
    "and Ingress reconciled from one object.",
    columns=(
        _col("Phase", ".status.phase", description="Life-cycle phase"),
        _READY,
        _col("License", ".status.licenseState", description="State of the License"),
        # A string, not a date: kubectl prints future dates as <invalid>.
        _col("Expires", ".status.licenseExpiresAt", description="License term end"),
        _col("URL", ".status.url", description="Public URL"),
        _col("Replicas", ".status.readyReplicas", "integer", "Ready storefront pods", 1),
        _col("Namespace", ".status.namespace", description="Namespace", priority=1),
        _AGE,
    ),
    root_rules=(
        {"rule": f"self.metadata.name.size() <= {MAX_SITE_NAME_LENGTH}",
         "message": f"a SubSite name must be at most {MAX_SITE_NAME_LENGTH} characters, so "
         "that its namespace kameng-<name> stays within 63"},
        {"rule": "self.metadata.name.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
         "message": "a SubSite name must be a DNS label: lowercase letters, digits and '-'"},
        {"rule": "!(self.metadata.name in " + _cel_list(RESERVED_SITE_NAMES) + ") && "
         + " && ".join(f"!self.metadata.name.startsWith('{p}')" for p in RESERVED_PREFIXES),
         "message": "this SubSite name is reserved: its namespace kameng-<name> or database "
         "role kameng_<name> would be one of the platform's own ("
         + ", ".join(RESERVED_SITE_NAMES) + ", or a name starting with "
         + " or ".join(RESERVED_PREFIXES) + "); choose another name"},
    ),
)

LICENSE = Kind(
    kind="License",
    plural="licenses",
    singular="license",
    short_names=("lic",),
    spec=LicenseSpec,
    status=LicenseStatus,
    description="The agreement that lets a SubSite sell: term, grace, scope and fees.",
    columns=(
        _col("SubSite", ".spec.subSite", description="Licensed sub-site"),
        _col("Plan", ".spec.plan", description="basic or flagship"),
        _col("State", ".status.state", description="Life-cycle state"),
        _col("Expires", ".status.expiresAt", description="Term end"),
        _col("Left", ".status.expiresIn", description="Time left (coarse)"),
        _col("Suspended", ".spec.suspended", "boolean", "Suspended by HQ", 1),
        _AGE,
    ),
)

ROLEPOLICY = Kind(
    kind="RolePolicy",
    plural="rolepolicies",
    singular="rolepolicy",
    short_names=("rp",),
    spec=RolePolicySpec,
    status=RolePolicyStatus,
    description="Roles and permissions for a sub-site's staff, and what needs HQ approval.",
    columns=(
        _col("Roles", ".status.roleCount", "integer", "Number of roles"),
        _col("Used-By", ".status.usedBy", "integer", "SubSites referencing this policy"),
        _READY,
        _AGE,
    ),
)

RISKPOLICY = Kind(
    kind="RiskPolicy",
    plural="riskpolicies",
    singular="riskpolicy",
    short_names=("risk",),
    spec=RiskPolicySpec,
    status=RiskPolicyStatus,
    description="Velocity features and CEL rules the risk worker applies to every order "
    "stream; site escalation thresholds.",
    columns=(
        _col("Mode", ".spec.mode", description="enforce or shadow"),
        _col("Rules", ".status.ruleCount", "integer", "Rules in the policy"),
        _col("Active", ".status.activeRules", "integer", "Rules compiled and running"),
        _col("Compiled", '.status.conditions[?(@.type=="RulesCompiled")].status',
             description="Every rule compiles"),
        _AGE,
    ),
)

KINDS: tuple[Kind, ...] = (SUBSITE, LICENSE, ROLEPOLICY, RISKPOLICY)
