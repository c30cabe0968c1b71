"""A site's license sequence number: it never goes backwards, whatever happens to the
objects (a License deleted and re-created, a namespace or Secret lost, an operator
restarted).

HQ refuses any token older than the newest it has seen for a site, so a sequence that
restarts (as ``metadata.generation`` does when a License is re-created) would lock the
site out at HQ for good. The sequence therefore grows from two floors: the token the
site holds now (same claims → same number, so an unchanged license re-signs to the same
bytes and its Secret is not rewritten), and the clock in milliseconds, which is above
every number issued before even when every object that remembered one is gone.
"""

from __future__ import annotations

from datetime import datetime

from kameng.contracts.license_token import LicenseClaims


def _same_terms(a: LicenseClaims, b: LicenseClaims) -> bool:
    # Compared as signed (whole seconds), so sub-second times in a spec compare equal.
    wire = {"mode": "json", "by_alias": True, "exclude": {"seq"}}
    return a.model_dump(**wire) == b.model_dump(**wire)


def next_sequence(claims: LicenseClaims, previous: LicenseClaims | None, now: datetime) -> int:
    """The sequence of ``claims``, given the claims of the token the site holds now."""
    if previous is not None and _same_terms(claims, previous):
        return previous.seq
    floor = int(now.timestamp() * 1000)
    return max(floor, previous.seq + 1 if previous is not None else 0)
