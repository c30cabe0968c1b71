"""Who may touch a site's backing objects: the one rule, shared by PostgreSQL and Redis.

The operator derives names (``kameng_<site>``, ``kameng-site-<site>``) and so may meet an
object of that name that it did not create for this SubSite: a person's role, the
admin's own role, or the data a deleted SubSite of the same name left behind. It acts
only on objects carrying this SubSite's uid, and refuses everything else with a message
that names the object and says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kameng.api import conditions as c

Verdict = Literal["create", "ours", "adopt"]


@dataclass(frozen=True)
class Claim:
    """What a SubSite may claim as its own."""

    uid: str
    # uid of a deleted SubSite whose retained data a person handed to this one
    # (spec.database.adoptRetainedFrom).
    adopt_from: str | None = None
    # Unmarked objects of a site created by an operator version that did not mark yet:
    # allowed only when the site's namespace proves the site is this SubSite (our
    # managed-by label and an ownerReference with this uid).
    adopt_unmarked: bool = False


class NotOurs(Exception):
    """A derived name is taken by something this SubSite did not create. The message
    names the object and what a person can do; it never carries a credential."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def judge(what: str, exists: bool, owner: str | None, claim: Claim) -> Verdict:
    """``owner``: the uid the object is marked with (None: unmarked)."""
    if not exists:
        return "create"
    if owner == claim.uid:
        return "ours"
    if owner is None:
        if claim.adopt_unmarked:
            return "adopt"
        raise NotOurs(c.R_NAME_CONFLICT,
                      f"{what} already exists and was not created by the kameng operator "
                      "for this SubSite; the operator will not adopt, change or delete it. "
                      "Rename the SubSite, or rename or remove that object")
    if claim.adopt_from == owner:
        return "adopt"
    raise NotOurs(c.R_RETAINED_DATA,
                  f"{what} holds data retained from a deleted SubSite of the same name "
                  f"(uid {owner}); it is not handed to a new SubSite unless a person asks: "
                  f"set spec.database.adoptRetainedFrom: {owner} to take it over, or drop "
                  "it (docs/runbooks.md, \"Retained data\")")
