"""Pure-logic parts of the storefront: encryption, notification signatures, CSV import
parsing, license guard, settings loading, log redaction."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from kameng.contracts.hq_api import NotificationError, sign_notification, verify_notification
from kameng.contracts.license_token import (
    LicenseClaims,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.config import ConfigError, load_settings
from kameng_storefront.crypto import CryptoError, DataCipher, hash_password, verify_password
from kameng_storefront.hq.inventory import parse_csv
from kameng_storefront.logs import JsonFormatter
from kameng_storefront.web.license_guard import LicenseGuard


def test_cipher_round_trip_rotation_and_aad():
    old = DataCipher.generate_spec("k1")
    new = DataCipher.generate_spec("k2")
    c_old = DataCipher(old)
    token = c_old.encrypt("CARD-1234", aad="order-1")
    assert token.startswith("k1:")
    assert "CARD-1234" not in token
    rotated = DataCipher(f"{new},{old}")  # new key first: encrypts with k2, still reads k1
    assert rotated.decrypt(token, aad="order-1") == "CARD-1234"
    assert rotated.encrypt("x").startswith("k2:")
    with pytest.raises(CryptoError):
        rotated.decrypt(token, aad="order-2")  # ciphertext moved to another row
    with pytest.raises(CryptoError):
        DataCipher(new).decrypt(token, aad="order-1")  # key gone
    with pytest.raises(CryptoError):
        DataCipher("k1:dG9vc2hvcnQ=")


def test_passwords():
    h = hash_password("s3cret-pass")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "s3cret-pass")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "anything")


def test_notification_signature():
    body = json.dumps({"notification_id": "n1", "payment_id": "p", "site": "s",
                       "order_id": "o", "amount": 100, "status": "paid"}).encode()
    now = time.time()
    ts = int(now)
    headers = {"x-kameng-timestamp": str(ts),
               "x-kameng-signature": sign_notification("k", ts, body)}
    assert verify_notification("k", headers, body, now).amount == 100
    with pytest.raises(NotificationError, match="signature"):
        verify_notification("other", headers, body, now)
    with pytest.raises(NotificationError, match="signature"):
        verify_notification("k", headers, body.replace(b"100", b"1"), now)
    with pytest.raises(NotificationError, match="stale"):
        verify_notification("k", headers, body, now + 3600)
    with pytest.raises(NotificationError):
        verify_notification("k", {}, body, now)


def test_parse_csv():
    assert parse_csv("secret\nA\n\nB\n", "p1") == [("p1", "A"), ("p1", "B")]
    assert parse_csv("product_id,secret\np2,X\n", None) == [("p2", "X")]
    with pytest.raises(ValueError, match="no product"):
        parse_csv("A\n", None)


def _site(pub: str, **kw) -> SiteConfig:
    return SiteConfig(site="demo", categories=["game"], hq_public_key=pub, **kw)


def _claims(**kw) -> LicenseClaims:
    now = datetime.now(UTC)
    base = dict(site="demo", categories=["game", "mobile"], regions=["CN-31"],
                nbf=now - timedelta(hours=1), exp=now + timedelta(days=1),
                graceUntil=now + timedelta(days=2))
    base.update(kw)
    return LicenseClaims(**base)


def test_license_guard_modes(tmp_path, caplog):
    key = generate_signing_key()
    pub = public_key_to_b64(key)
    guard = LicenseGuard(_site(pub), sign_token(_claims(), key))
    assert guard.mode() == "normal"
    assert guard.allowed_categories() == {"game"}  # config narrows the license
    assert guard.allows_region("CN-31")
    assert not guard.allows_region("CN-11")
    # The config's mode is applied on top of a valid license (most restrictive wins).
    assert LicenseGuard(_site(pub, mode="readOnly"), sign_token(_claims(), key)).mode() == \
        "readOnly"
    # A token for another site is refused.
    caplog.set_level(logging.ERROR)
    other = LicenseGuard(_site(pub), sign_token(_claims(site="evil"), key))
    assert other.mode() == "suspended"
    assert "another site" in caplog.records[-1].reason
    # File-mounted token: re-read after a change.
    f = tmp_path / "token"
    f.write_text("")
    g = LicenseGuard(_site(pub), None, str(f), recheck_seconds=0)
    assert g.mode() == "suspended"
    assert g.problem == "license token is missing"
    f.write_text(sign_token(_claims(suspended=False), key))
    time.sleep(0.01)
    os.utime(f, (time.time() + 5, time.time() + 5))
    assert g.mode() == "normal"


def test_settings_from_files_and_errors(tmp_path):
    root = tmp_path / "secrets"
    for rel, val in {"storefront-db/dsn": "postgresql://x", "storefront-redis/url": "redis://y",
                     "storefront-keys/session-secret": "s", "storefront-keys/data-key": "k",
                     "storefront-keys/hq-api-token": "t", "license/token": "tok"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(val + "\n")
    cfg = tmp_path / "site.json"
    cfg.write_text(SiteConfig(site="demo", hq_url="http://hq/").to_json())
    env = {"KAMENG_SECRETS_ROOT": str(root), "KAMENG_SITE_CONFIG_FILE": str(cfg)}
    s = load_settings("subsite", env)
    assert s.database_url == "postgresql://x"
    assert s.hq_url == "http://hq"
    assert s.pay_base == "http://hq"  # no public URL: HQ's own (a dev environment)
    cfg.write_text(SiteConfig(site="demo", hq_url="http://hq/",
                              hq_public_url="https://hq.example/").to_json())
    assert load_settings("subsite", env).pay_base == "https://hq.example"
    assert load_settings("subsite", {**env, "KAMENG_HQ_PUBLIC_URL": "https://x/"}
                         ).pay_base == "https://x"
    cfg.write_text(SiteConfig(site="demo", hq_url="http://hq/").to_json())
    s = load_settings("subsite", env)
    assert s.license_token is None  # file tokens are read (and re-read) by the guard
    assert s.license_token_file == str(root / "license/token")
    assert "postgresql" not in repr(s)
    (root / "storefront-db/dsn").unlink()
    with pytest.raises(ConfigError, match="KAMENG_DATABASE_URL") as ei:
        load_settings("subsite", env)
    assert "redis://y" not in str(ei.value)


def test_log_formatter_redacts_secret_fields():
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    rec.password = "hunter2"
    rec.order = "K1"
    out = json.loads(JsonFormatter().format(rec))
    assert out["password"] == "[redacted]"
    assert out["order"] == "K1"


def test_failure_throttle_keys_are_short_and_per_site():
    # Counting itself runs on real Redis (tests/integration/test_throttle.py); here: the
    # keys stay under the site's ACL prefix, fixed-size whatever the subject.
    from kameng_storefront.web import throttle as mod

    t = mod.FailureThrottle("demo")
    long_key = t.key(mod.LOGIN_PER_ACCOUNT_CLIENT, ("x" * 10_000 + "\x00😀", "192.0.2.1"))
    assert long_key.startswith("site:demo:throttle:login:")
    assert len(long_key) == len(t.key(mod.LOGIN_PER_ACCOUNT_CLIENT, ("a", "b")))
    assert t.key(mod.LOGIN_PER_CLIENT, ("a",)) != t.key(mod.LOOKUP_PER_CLIENT, ("a",))
