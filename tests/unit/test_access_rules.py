"""Who may do what: the shop's offline license gate (mode, scope, token file reloads and
its log lines), HQ's site authentication and license refusals, the per-site API token,
the signed payment notification, and the staff permission guard. `make mutation` checks
that breaking any of these checks fails a test here."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from kameng.contracts import hq_api
from kameng.contracts.hq_api import (
    NotificationError,
    PaymentNotification,
    notification_headers,
    sign_notification,
    verify_notification,
)
from kameng.contracts.hq_auth import SiteCredential, new_site_api_token, token_digest
from kameng.contracts.license_token import (
    LicenseClaims,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.hq.site_auth import ApiRefused, authenticate_site
from kameng_storefront.web import auth
from kameng_storefront.web.license_guard import LicenseGuard

KEY = generate_signing_key()
NOW = datetime.now(UTC)


def claims(**kw) -> LicenseClaims:
    base = dict(site="demo", categories=["game", "mobile"], regions=["CN-31"],
                nbf=NOW - timedelta(days=1), exp=NOW + timedelta(days=60),
                graceUntil=NOW + timedelta(days=63), seq=1)
    base.update(kw)
    return LicenseClaims(**base)


def site(**kw) -> SiteConfig:
    base = {"site": "demo", "hq_public_key": public_key_to_b64(KEY)}
    base.update(kw)
    return SiteConfig(**base)


# --- the shop's license gate --------------------------------------------------------------


def test_guard_mode_is_the_stricter_of_token_and_config():
    tok = sign_token(claims(), KEY)
    assert LicenseGuard(site(), tok).mode() == "normal"
    assert LicenseGuard(site(mode="readOnly"), tok).mode() == "readOnly"
    assert LicenseGuard(site(mode="suspended"), tok).mode() == "suspended"
    grace = sign_token(claims(exp=NOW - timedelta(hours=1)), KEY)
    assert LicenseGuard(site(), grace).mode() == "readOnly"
    assert LicenseGuard(site(mode="normal"), grace).mode() == "readOnly"
    # An explicit time is honoured: this token was not yet in force a year ago.
    assert LicenseGuard(site(), tok).mode(NOW - timedelta(days=365)) == "suspended"


def test_guard_refuses_another_sites_token_and_a_missing_one(caplog):
    caplog.set_level(logging.INFO, logger="kameng.storefront.license")
    g = LicenseGuard(site(), sign_token(claims(site="other"), KEY))
    assert g.claims is None
    assert g.token is None
    assert g.problem == "license token is for another site"
    assert g.mode() == "suspended"
    assert g.allowed_categories() == set()
    assert g.allows_region("CN-31") is False
    assert g.allows_region("") is True  # a product without a region is not region-bound
    refused = [r for r in caplog.records
               if r.getMessage() == "license token refused, shop suspended"]
    assert len(refused) == 1
    assert (refused[0].levelno, refused[0].site, refused[0].reason) == (
        logging.ERROR, "demo", "license token is for another site")
    assert LicenseGuard(site(), None).problem == "license token is missing"


def test_guard_scope_is_the_config_narrowed_by_the_claims():
    tok = sign_token(claims(), KEY)
    assert LicenseGuard(site(), tok).allowed_categories() == {"game", "mobile"}
    narrowed = LicenseGuard(site(categories=["game", "gift"]), tok)
    assert narrowed.allowed_categories() == {"game"}  # gift is not in the signed claims
    g = LicenseGuard(site(), tok)
    assert g.allows_region("CN-31") is True
    assert g.allows_region("CN-11") is False
    assert g.allows_region("") is True


def test_guard_logs_acceptance_once_per_sequence(caplog):
    caplog.set_level(logging.INFO, logger="kameng.storefront.license")
    g = LicenseGuard(site(), sign_token(claims(seq=4), KEY))
    g._apply(sign_token(claims(seq=4), KEY))  # same token again: nothing new to say
    g._apply(sign_token(claims(seq=5), KEY))
    accepted = [r for r in caplog.records if r.getMessage() == "license token accepted"]
    assert [(r.site, r.seq) for r in accepted] == [("demo", 4), ("demo", 5)]
    exp = datetime.fromtimestamp(int(claims().exp.timestamp()), UTC)  # whole seconds on the wire
    assert accepted[0].exp == exp.isoformat()
    assert g.token == sign_token(claims(seq=5), KEY)
    assert g.problem is None
    # Refused twice with the same problem: one error line; recovery logs acceptance.
    g._apply("garbage")
    g._apply("garbage")
    refused = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refused) == 1
    assert g.token is None
    g._apply(sign_token(claims(seq=5), KEY))
    assert g.claims is not None
    assert g.claims.seq == 5
    assert [r.getMessage() for r in caplog.records][-1] == "license token accepted"


def test_first_good_token_is_logged_even_with_seq_zero(caplog):
    caplog.set_level(logging.INFO, logger="kameng.storefront.license")
    LicenseGuard(site(), sign_token(claims(seq=0), KEY))
    assert [r.getMessage() for r in caplog.records] == ["license token accepted"]


def test_guard_reloads_a_mounted_token_file_when_it_changes(tmp_path):
    f = tmp_path / "token"
    f.write_text(sign_token(claims(seq=1), KEY) + "\n")
    g = LicenseGuard(site(), None, token_file=str(f), recheck_seconds=0)
    assert g.claims is not None
    assert g.claims.seq == 1
    f.write_text(sign_token(claims(seq=2, suspended=True), KEY))
    os.utime(f, (time.time() + 5, time.time() + 5))  # a new mtime even on coarse clocks
    assert g.mode() == "suspended"
    assert g.claims.seq == 2
    f.unlink()  # Secret removed: the shop suspends, no crash
    assert g.mode() == "suspended"
    assert g.claims is None
    assert g.problem == "license token is missing"


def test_guard_rechecks_the_file_only_every_recheck_seconds(tmp_path):
    f = tmp_path / "token"
    f.write_text(sign_token(claims(seq=1), KEY))
    g = LicenseGuard(site(), None, token_file=str(f), recheck_seconds=3600)
    f.write_text(sign_token(claims(seq=2), KEY))
    os.utime(f, (time.time() + 5, time.time() + 5))
    g.reload_if_changed()
    assert g.claims.seq == 1  # not re-read before the recheck interval
    g._next_check = 0.0
    g.reload_if_changed()
    assert g.claims.seq == 2
    assert g._next_check > time.monotonic() + 3000


def test_guard_default_recheck_is_five_seconds(tmp_path):
    f = tmp_path / "token"
    f.write_text(sign_token(claims(seq=1), KEY))
    before = time.monotonic()
    g = LicenseGuard(site(), None, token_file=str(f))
    assert before + 5 <= g._next_check <= time.monotonic() + 5


def test_an_env_token_wins_over_the_file(tmp_path):
    f = tmp_path / "token"
    f.write_text(sign_token(claims(seq=9), KEY))
    g = LicenseGuard(site(), sign_token(claims(seq=3), KEY), token_file=str(f))
    g._next_check = 0.0
    g.reload_if_changed()
    assert g.claims.seq == 3
    # An empty env token with a file given still means: read the file.
    assert LicenseGuard(site(), None, token_file=str(f)).claims.seq == 9


def test_an_unreadable_token_file_suspends(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()  # exists (has an mtime) but cannot be read as a file
    g = LicenseGuard(site(), None, token_file=str(d))
    assert g.claims is None
    assert g.mode() == "suspended"


# --- HQ: which site is calling, and may it? -----------------------------------------------


TOKEN = new_site_api_token()


class _Registry:
    """HQ's registry as the operator publishes it: only the token's digest, per site."""

    def __init__(self, **entries: SiteCredential) -> None:
        self.entries = entries

    def get(self, site: str) -> SiteCredential | None:
        return self.entries.get(site)


def _entry(site: str = "demo", token: str = TOKEN, state: str = "active") -> SiteCredential:
    return SiteCredential(site=site, sha256=token_digest(token), createdAt="2026-01-01T00:00:00Z",
                          state=state)  # type: ignore[arg-type]


def _request(headers: dict[str, str], registry: _Registry | None = None) -> Request:
    app = Starlette()
    app.state.kameng = SimpleNamespace(credentials=registry or _Registry(demo=_entry()))
    return Request({"type": "http", "method": "POST", "path": "/", "app": app,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


def test_site_authentication():
    token = TOKEN
    assert authenticate_site(_request(hq_api.site_headers("demo", token))) == "demo"
    for headers in (hq_api.site_headers("other", token),            # another site's token
                    hq_api.site_headers("demo", token + "0"),
                    hq_api.site_headers("demo", new_site_api_token()),
                    hq_api.site_headers("", token),
                    {"X-Kameng-Site": "demo"},
                    {"X-Kameng-Site": "demo", "Authorization": token}):  # not a bearer
        with pytest.raises(ApiRefused) as exc:
            authenticate_site(_request(headers))
        assert (exc.value.status, exc.value.code, str(exc.value)) == (
            401, "unauthenticated", "unauthenticated")


def test_a_suspended_site_may_only_refund():
    reg = _Registry(demo=_entry(state="suspended"))
    with pytest.raises(ApiRefused) as exc:
        authenticate_site(_request(hq_api.site_headers("demo", TOKEN), reg))
    assert (exc.value.status, exc.value.code) == (403, "site_suspended")
    assert authenticate_site(_request(hq_api.site_headers("demo", TOKEN), reg),
                             allow_suspended=True) == "demo"


def test_site_tokens_are_random_and_only_their_digest_is_accepted():
    a, b = new_site_api_token(), new_site_api_token()
    assert a != b
    assert len(a) >= 32
    entry = _entry(token=a)
    assert entry.accepts(a) is True
    assert entry.accepts(b) is False
    assert entry.accepts("") is False
    assert entry.sha256 == token_digest(a) != a


# --- signed payment notifications ---------------------------------------------------------


def _note(**kw) -> bytes:
    base = dict(notification_id="n1", payment_id="p1", site="demo", order_id="o1", amount=1234,
                status="paid")
    base.update(kw)
    return PaymentNotification(**base).to_json()


def test_notification_wire_format_and_signature():
    body = _note()
    assert body == (b'{"notification_id":"n1","payment_id":"p1","site":"demo","order_id":"o1",'
                    b'"amount":1234,"currency":"CNY","status":"paid"}')
    import hashlib
    import hmac

    mac = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_notification("secret", 1700000000, body) == "v1=" + mac
    h = notification_headers("secret", body, now=1700000000.7)
    assert h == {"content-type": "application/json", "X-Kameng-Timestamp": "1700000000",
                 "X-Kameng-Signature": "v1=" + mac}
    before = int(time.time())
    live = notification_headers("secret", body)
    assert before <= int(live["X-Kameng-Timestamp"]) <= int(time.time())


def _lower(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


def test_notification_verification_window_is_inclusive():
    body = _note()
    h = _lower(notification_headers("secret", body, now=1000))
    assert verify_notification("secret", h, body, now=1300).amount == 1234
    assert verify_notification("secret", h, body, now=700).site == "demo"
    for now in (1301, 699):
        with pytest.raises(NotificationError, match=r"^stale timestamp$"):
            verify_notification("secret", h, body, now=now)
    # Without `now`: the clock.
    fresh = _lower(notification_headers("secret", body))
    assert verify_notification("secret", fresh, body).status == "paid"
    with pytest.raises(NotificationError, match=r"^stale timestamp$"):
        verify_notification("secret", h, body)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda h, b: ({**h, "x-kameng-timestamp": "soon"}, b), "missing or bad timestamp"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "x-kameng-timestamp"}, b),
     "missing or bad timestamp"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "x-kameng-signature"}, b),
     "bad signature"),
    (lambda h, b: ({**h, "x-kameng-signature": "v1=" + "0" * 64}, b), "bad signature"),
    (lambda h, b: (h, b.replace(b"1234", b"9999")), "bad signature"),
    (lambda h, b: ({**h, "x-kameng-timestamp": str(int(h["x-kameng-timestamp"]) + 1)}, b),
     "bad signature"),
])
def test_notification_refusals(mutate, message):
    body = _note()
    h, b = mutate(_lower(notification_headers("secret", body, now=1000)), body)
    with pytest.raises(NotificationError) as exc:
        verify_notification("secret", h, b, now=1000)
    assert str(exc.value) == message


def test_malformed_notification_body():
    for body in (b"not json", json.dumps({"site": "demo"}).encode()):
        h = _lower(notification_headers("secret", body, now=1000))
        with pytest.raises(NotificationError) as exc:
            verify_notification("secret", h, body, now=1000)
        assert str(exc.value) == "malformed body"


def test_catalog_bytes_are_compact_and_utf8():
    cat = hq_api.Catalog(products=[hq_api.CatalogProduct(
        id="g1", nameZh="游戏卡", nameEn="Game", category="game", faceValue=100, cost=90,
        stock=1, active=True)])
    raw = cat.to_json()
    assert "游戏卡".encode() in raw
    assert b", " not in raw
    assert b'"nameZh"' in raw
    assert len(cat.etag()) == 34  # quotes + 32 hex


# --- staff permission guard ---------------------------------------------------------------


def test_login_routes():
    routes = {(r.path, tuple(sorted(r.methods or ()))): r.endpoint for r in auth.login_routes()}
    assert routes == {("/login", ("GET", "HEAD")): auth.login_page,
                      ("/login", ("POST",)): auth.login_submit,
                      ("/logout", ("POST",)): auth.logout,
                      ("/password", ("GET", "HEAD")): auth.password_page,
                      ("/password", ("POST",)): auth.password_submit}
    invites = {(r.path, tuple(sorted(r.methods or ()))): r.endpoint
               for r in auth.invitation_routes()}
    assert invites == {("/invite/{token}", ("GET", "HEAD")): auth.invite_page,
                       ("/invite/{token}", ("POST",)): auth.invite_submit}


def test_requires_records_its_permission():
    async def handler(request, staff):  # pragma: no cover - never called here
        raise AssertionError

    assert auth.requires("orders:refund")(handler).permission == "orders:refund"
    assert auth.requires()(handler).permission is None
    assert auth.requires("finance:withdraw")(handler).__name__ == "handler"


def test_permissions_for_roles_deny_by_default():
    s = SiteConfig(site="demo", roles={"finance": ["finance:read", "finance:withdraw"]})
    assert s.permissions_for("finance") == frozenset({"finance:read", "finance:withdraw"})
    assert s.permissions_for("root") == frozenset()
    listed = SiteConfig.model_validate({"site": "demo", "roles": [
        {"name": "ops", "permissions": ["orders:read"]}, {"name": "none"}]})
    assert listed.permissions_for("ops") == frozenset({"orders:read"})
    assert listed.permissions_for("none") == frozenset()
