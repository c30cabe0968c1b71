"""Who is calling HQ's API: the site's API token (checked against the site-credential
registry, :mod:`kameng.contracts.hq_auth`), and the license it must hold.

Raises :class:`ApiRefused`; the API routes turn it into ``{"error": code}``.
"""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from kameng.contracts.hq_api import AUTHORIZATION, LICENSE_HEADER, SITE_HEADER, bearer_token
from kameng.contracts.hq_auth import SiteCredential
from kameng.contracts.license_token import LicenseClaims, TokenError, evaluate_mode, verify_token

from ..state import state_of

log = logging.getLogger("kameng.storefront.hq")


class ApiRefused(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


def site_credential(request: Request, site: str) -> SiteCredential | None:
    registry = state_of(request).credentials
    return registry.get(site) if registry is not None else None


def authenticate_site(request: Request, allow_suspended: bool = False) -> str:
    """The calling site, if its token matches its registry entry. A ``suspended`` entry
    (the operator suspended the site) is refused unless ``allow_suspended`` (refunds:
    money going back to the site's buyers)."""
    site = request.headers.get(SITE_HEADER, "")
    token = bearer_token(request.headers.get(AUTHORIZATION, ""))
    entry = site_credential(request, site)
    if entry is None or not entry.accepts(token):
        log.warning("site authentication failed", extra={"site": site[:63]})
        raise ApiRefused(401, "unauthenticated")
    if entry.state != "active" and not allow_suspended:
        log.warning("suspended site refused", extra={"site": site})
        raise ApiRefused(403, "site_suspended")
    return site


def license_refusal(claims: LicenseClaims, site: str, allow_read_only: bool) -> str | None:
    """Error code if ``claims`` do not let ``site`` make this call now, else ``None``."""
    if claims.site != site:
        return "license_wrong_site"
    mode = evaluate_mode(claims)
    if mode == "suspended" or (mode == "readOnly" and not allow_read_only):
        return f"license_{mode}"
    return None


async def check_license(request: Request, site: str, allow_read_only: bool) -> LicenseClaims:
    """Verify the sub-site's license token (header ``X-Kameng-License``) for ``site``."""
    state = state_of(request)
    try:
        claims = verify_token(request.headers.get(LICENSE_HEADER), state.license_keys)
    except TokenError as exc:
        log.warning("license refused", extra={"site": site, "reason": str(exc)})
        raise ApiRefused(403, "license_invalid") from exc
    # Record first, then judge: a newer token counts even when it is refused (suspended),
    # so no older, unsuspended token is ever accepted after it. Only the caller's own
    # tokens are recorded: another site's must not move this site's sequence.
    if claims.site == site and await highest_license_seq(state.pool, site, claims.seq) \
            > claims.seq:
        raise ApiRefused(403, "license_superseded")
    refusal = license_refusal(claims, site, allow_read_only)
    if refusal:
        raise ApiRefused(403, refusal)
    return within_published_scope(claims, site_credential(request, site))


def within_published_scope(claims: LicenseClaims, entry: SiteCredential | None
                           ) -> LicenseClaims:
    """The token's scope narrowed to the License's scope the operator published now:
    a category or region taken away mid-term is refused at once, whatever token the
    shop sends; one added counts once the shop's token carries it too."""
    if entry is None or (entry.categories is None and entry.regions is None):
        return claims
    update: dict[str, list[str]] = {}
    if entry.categories is not None:
        update["categories"] = [c for c in claims.categories if c in entry.categories]
    if entry.regions is not None:
        update["regions"] = [r for r in claims.regions if r in entry.regions]
    return claims.model_copy(update=update)


async def highest_license_seq(pool: AsyncConnectionPool, site: str, seq: int) -> int:
    """Record ``seq`` if it is the highest seen for ``site``; return the highest."""
    # Read first; write only when the sequence grows (a renewal: rare). An INSERT ... ON
    # CONFLICT DO UPDATE locks the site's row even when its WHERE leaves it unchanged, so
    # every API call of a site queued on that lock until the one before it committed:
    # 16 buyers paying at once waited on each other (pg_stat_activity: `Lock tuple`).
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT seq FROM site_license_seq WHERE site = %s", (site,))).fetchone()
        if row is not None and row["seq"] >= seq:
            return int(row["seq"])
        # The new value if it was written, else the stored one (a concurrent caller
        # recorded a higher one meanwhile).
        row = await (
            await conn.execute(
                "WITH up AS (INSERT INTO site_license_seq (site, seq) VALUES (%(site)s, %(seq)s)"
                " ON CONFLICT (site) DO UPDATE SET seq = EXCLUDED.seq"
                " WHERE site_license_seq.seq < EXCLUDED.seq RETURNING seq)"
                " SELECT coalesce((SELECT seq FROM up),"
                " (SELECT seq FROM site_license_seq WHERE site = %(site)s)) AS seq",
                {"site": site, "seq": seq},
            )
        ).fetchone()
    return int(row["seq"])
