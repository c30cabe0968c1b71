"""License enforcement inside the sub-site shop, offline (no call to HQ or the operator).

The effective mode is the most restrictive of the license token's verdict and the
site config's ``mode``. A missing or tampered token suspends the shop with one clear log
line per change — never a crash, so the pod stays up and serves the 503 page.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Literal

from kameng.contracts.license_token import (
    LicenseClaims,
    TokenError,
    evaluate_mode,
    load_public_key,
    mode_until,
    verify_token,
)
from kameng.contracts.siteconfig import SiteConfig
from kameng.licensing.lifecycle import Terms, state_at, time_left
from kameng.licensing.term import format_time

log = logging.getLogger("kameng.storefront.license")
Mode = Literal["normal", "readOnly", "suspended"]
_RANK: dict[str, int] = {"normal": 0, "readOnly": 1, "suspended": 2}


class LicenseGuard:
    def __init__(
        self, site: SiteConfig, token: str | None, token_file: str | None = None,
        recheck_seconds: float = 5.0,
    ) -> None:
        self.site = site
        self._token_file = token_file
        self._recheck = recheck_seconds
        self._file_mtime: float | None = None
        self._next_check = 0.0
        self.claims: LicenseClaims | None = None
        self.problem: str | None = None
        self.token: str | None = None
        # (claims, mode, until): mode() for those claims until that time (None: forever).
        self._verdict: tuple[LicenseClaims, Mode, datetime | None] | None = None
        if token is not None or not token_file:
            self._token_file = None  # an env-provided token wins over files
            self._apply(token)
        else:
            self.reload_if_changed()

    def _apply(self, token: str | None) -> None:
        claims: LicenseClaims | None = None
        problem: str | None = None
        try:
            key = load_public_key(self.site.hq_public_key)
            claims = verify_token(token, key)
            if claims.site != self.site.site:
                raise TokenError("license token is for another site")
        except TokenError as exc:
            problem, claims = str(exc), None
        first = self.claims is None and self.problem is None
        changed = claims is not None and (self.claims is None or claims.seq != self.claims.seq)
        if first or problem != self.problem or changed:
            if problem:
                log.error(
                    "license token refused, shop suspended",
                    extra={"site": self.site.site, "reason": problem},
                )
            elif claims:
                log.info(
                    "license token accepted",
                    extra={"site": claims.site, "seq": claims.seq, "exp": claims.exp.isoformat()},
                )
        self.claims, self.problem = claims, problem
        self.token = token if claims is not None else None

    def reload_if_changed(self) -> None:
        """Re-read a file-mounted token when the Secret changes (cheap: mtime check)."""
        now = time.monotonic()
        if not self._token_file or now < self._next_check:
            return
        self._next_check = now + self._recheck
        try:
            mtime = os.stat(self._token_file).st_mtime
        except OSError:
            mtime = -1.0
        if mtime == self._file_mtime:
            return
        self._file_mtime = mtime
        try:
            with open(self._token_file, encoding="utf-8") as fh:
                token: str | None = fh.read().strip()
        except OSError:
            token = None
        self._apply(token)

    def mode(self, now: datetime | None = None) -> Mode:
        self.reload_if_changed()
        claims = self.claims
        if claims is None:
            return "suspended"
        if now is None:
            # Asked on every request: the verdict is kept until the life cycle's next
            # change by time alone (or a new token), never computed twice in between.
            at = datetime.now(UTC)
            cached = self._verdict
            if cached is not None and cached[0] is claims and (cached[2] is None
                                                               or at < cached[2]):
                return cached[1]
            verdict, until = mode_until(claims, at)
            mode = max(verdict, self.site.mode, key=_RANK.__getitem__)
            self._verdict = (claims, mode, until)
            return mode  # type: ignore[return-value]
        verdict = evaluate_mode(claims, now)
        return max(verdict, self.site.mode, key=_RANK.__getitem__)  # type: ignore[return-value]

    def term_notice(self, now: datetime | None = None) -> dict[str, str] | None:
        """What the partner's back office shows about the term: from the signed claims
        and the one life cycle, so the banner appears exactly when the License is
        ExpiringSoon (its own lead time travels in the token) or in Grace."""
        if self.claims is None:
            return None
        terms = Terms.from_claims(self.claims)
        at = now or datetime.now(UTC)
        lc = state_at(terms, at)
        if lc.state not in ("ExpiringSoon", "Grace"):
            return None
        return {"state": lc.state, "end": format_time(terms.end),
                "grace_until": format_time(terms.grace_until),
                "left": time_left(terms, at)[0]}

    def allowed_categories(self) -> set[str]:
        """Licensed categories: the config's list narrowed by the signed claims."""
        if self.claims is None:
            return set()
        claimed = set(self.claims.categories)
        return claimed & set(self.site.categories) if self.site.categories else claimed

    def allows_region(self, region: str) -> bool:
        return not region or (self.claims is not None and region in self.claims.regions)
