"""HQ's view of a calling site without a server: the License scope the operator published
narrows whatever token a shop sends, a site missing from (or absent) registry is nobody,
and a suspended site's refusal is logged with its name."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from kameng.contracts import hq_api
from kameng.contracts.hq_auth import SiteCredential, new_site_api_token, token_digest
from kameng.contracts.license_token import LicenseClaims
from kameng_storefront.hq.site_auth import (
    ApiRefused,
    authenticate_site,
    site_credential,
    within_published_scope,
)

NOW = datetime.now(UTC)
CLAIMS = LicenseClaims(site="demo", categories=["game", "phone"], regions=["CN-31", "CN-11"],
                       nbf=NOW - timedelta(days=1), exp=NOW + timedelta(days=30),
                       graceUntil=NOW + timedelta(days=33))
TOKEN = new_site_api_token()


def _entry(**kw) -> SiteCredential:
    return SiteCredential(site="demo", sha256=token_digest(TOKEN),
                          createdAt="2026-01-01T00:00:00Z", **kw)


def _request(headers: dict[str, str], credentials: object) -> Request:
    app = Starlette()
    app.state.kameng = SimpleNamespace(credentials=credentials)
    return Request({"type": "http", "method": "POST", "path": "/", "app": app,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


# --- within_published_scope ------------------------------------------------------------------

def test_nothing_published_leaves_the_token_alone() -> None:
    assert within_published_scope(CLAIMS, None) == CLAIMS
    assert within_published_scope(CLAIMS, _entry()) == CLAIMS


def test_published_categories_alone_narrow_only_categories() -> None:
    out = within_published_scope(CLAIMS, _entry(categories=["phone", "video"]))
    assert (out.categories, out.regions) == (["phone"], ["CN-31", "CN-11"])


def test_published_regions_alone_narrow_only_regions() -> None:
    out = within_published_scope(CLAIMS, _entry(regions=["CN-11"]))
    assert (out.categories, out.regions) == (["game", "phone"], ["CN-11"])


def test_an_empty_published_scope_takes_everything_away() -> None:
    out = within_published_scope(CLAIMS, _entry(categories=[], regions=[]))
    assert (out.categories, out.regions) == ([], [])
    # The rest of the token is untouched.
    assert (out.site, out.exp, out.seq) == (CLAIMS.site, CLAIMS.exp, CLAIMS.seq)


# --- site_credential / authenticate_site ---------------------------------------------------

class _Registry:
    def __init__(self, **entries: SiteCredential) -> None:
        self.entries = entries

    def get(self, site: str) -> SiteCredential | None:
        return self.entries.get(site)


def test_without_a_registry_no_site_is_known() -> None:
    req = _request(hq_api.site_headers("demo", TOKEN), None)
    assert site_credential(req, "demo") is None
    with pytest.raises(ApiRefused) as exc:
        authenticate_site(req)
    assert (exc.value.status, exc.value.code) == (401, "unauthenticated")
    assert site_credential(_request({}, _Registry(demo=_entry())), "demo") == _entry()


def test_a_suspended_sites_refusal_is_logged_with_its_name(
        caplog: pytest.LogCaptureFixture) -> None:
    req = _request(hq_api.site_headers("demo", TOKEN),
                   _Registry(demo=_entry(state="suspended")))
    with caplog.at_level(logging.WARNING, logger="kameng"), pytest.raises(ApiRefused):
        authenticate_site(req)
    records = [r for r in caplog.records if r.getMessage() == "suspended site refused"]
    assert len(records) == 1
    assert records[0].site == "demo"  # type: ignore[attr-defined]
    assert records[0].levelno == logging.WARNING
    assert TOKEN not in caplog.text
