"""Shared building blocks of the kameng.io/v1alpha1 models.

The pydantic models are the single source of the CRD schemas (see ``crdgen``): every
rule a person can break is declared here, next to the field it guards, so the API
server's message and the Python validation never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kameng.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC to the second, as every time in the kinds' status."""
    return dt.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

# Regexes shared by CEL rules and Python validation. Kept in RE2 syntax (no
# look-arounds) because the API server evaluates them with RE2.
DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MONEY_RE = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$"
PERCENT_RE = r"^(0|[1-9][0-9]{0,2})(\.[0-9]{1,2})?$"
DURATION_RE = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
REGION_RE = r"^[A-Z]{2}-[A-Z0-9]{1,3}$"
CATEGORY_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
UID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def rule(expr: str, message: str, *, field_path: str | None = None,
         reason: str | None = None, optional_old_self: bool = False) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    r: dict[str, Any] = {"rule": expr, "message": message}
    if field_path:
        r["fieldPath"] = field_path
    if reason:
        r["reason"] = reason
    if optional_old_self:
        r["optionalOldSelf"] = True
    return r


def cel(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (and any other schema keywords)."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


def checked(regex: str, message: str, *, max_length: int, description: str,
            **kwargs: Any) -> Any:
    """A string field checked by one readable CEL rule instead of a bare ``pattern``.

    A bare pattern makes the API server answer "should match '^(0|[1-9]…'", which
    nobody can act on; a rule with a message says what a valid value looks like.
    The same regex is enforced in Python, so both sides reject the same input.
    """
    return Field(
        max_length=max_length,
        pattern=regex,
        description=description,
        json_schema_extra=cel(rule(f"self.matches({_cel_str(regex)})", message)),
        **kwargs,
    )


def _cel_str(s: str) -> str:
    # CEL raw string literal: no escaping of regex backslashes needed.
    return "r'" + s + "'"


class KModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, strict on unknown keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KModel):
    """A kstatus / metav1.Condition compatible condition."""

    type: Annotated[str, Field(max_length=64, description="Type of condition, e.g. Ready.")]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(max_length=128, description="CamelCase reason.")] = ""
    message: Annotated[str, Field(max_length=2048, description="Human-readable detail.")] = ""
    last_transition_time: Annotated[
        str | None, Field(description="When the status last changed (RFC 3339).",
                          json_schema_extra={"format": "date-time"})
    ] = None
    observed_generation: Annotated[
        int | None, Field(ge=0, description="Generation the condition was computed for.")
    ] = None


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        max_length=16,
        description="Current state in kstatus form: Ready, Reconciling, Stalled and "
        "resource-specific conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
