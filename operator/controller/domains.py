"""One domain, one SubSite: who holds a domain that several SubSites claim.

Two SubSites with the same ``spec.domain`` would each get an Ingress for it and take
each other's traffic. The earliest claimant (by creationTimestamp, then name) holds the
domain; every later one gets no Ingress and a ``DomainConflict`` condition naming the
holder, and gets its Ingress as soon as the holder lets the domain go.
"""

from __future__ import annotations

from typing import NamedTuple


class DomainClaim(NamedTuple):
    created: str  # metadata.creationTimestamp (RFC 3339, sorts as text)
    name: str
    uid: str


def holder(claims: list[DomainClaim], name: str, uid: str) -> DomainClaim | None:
    """The SubSite that holds the domain, when it is not ``name`` itself; None when
    ``name`` holds it (or nobody else claims it)."""
    mine = [c for c in claims if c.uid == uid]
    if not claims or not mine:
        # Not in the index yet (just created): every indexed claimant is earlier.
        others = [c for c in claims if c.name != name]
        return min(others) if others else None
    first = min(claims)
    return None if first.uid == uid else first


def conflict_message(domain: str, by: DomainClaim) -> str:
    return (f"domain {domain} is already claimed by SubSite {by.name} (created "
            f"{by.created}); this SubSite gets no Ingress until {by.name} releases it. "
            "Change spec.domain, or delete or change the other SubSite")
