"""Edges the other rule tests leave open, found by `make mutation`: naive times on a host
whose clock is not UTC, HQ's log line for a refused
site, Events for an unchanged failing condition, the resync jitter, the site config's
canonical bytes and where it is read from, the token file's mtime check."""

from __future__ import annotations

import logging
import os
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from kameng.contracts.license_token import (
    LicenseClaims,
    evaluate_mode,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.pod import DEFAULT_CONFIG_PATH
from kameng.contracts.siteconfig import SiteConfig, SiteConfigError, load_site_config
from kameng.controller.reconcile import _jitter
from kameng.controller.status import Observation, compute, deployment_available, transitions
from kameng.licensing.lifecycle import Terms, state_at
from kameng.licensing.verdict import LicenseVerdict
from kameng_storefront.hq.site_auth import ApiRefused, authenticate_site
from kameng_storefront.shop.catalog import ShopProduct
from kameng_storefront.web.license_guard import LicenseGuard

from .test_access_rules import _request

KEY = generate_signing_key()


@pytest.fixture
def shanghai_clock():
    """The process's local time zone is UTC+8 (as on a host in China) for one test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_naive_times_mean_utc_whatever_the_local_zone(shanghai_clock):
    naive = datetime(2026, 7, 1)  # 2026-07-01T00:00Z
    c = LicenseClaims(site="demo", nbf=naive - timedelta(days=1), exp=naive,
                      graceUntil=naive + timedelta(days=3))
    assert c.model_dump(mode="json", by_alias=True)["exp"] == int(
        datetime(2026, 7, 1, tzinfo=UTC).timestamp())
    assert Terms.from_claims(c).end == datetime(2026, 7, 1, tzinfo=UTC)
    t = Terms(site="demo", start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 7, 1,
              tzinfo=UTC), grace_until=datetime(2026, 7, 4, tzinfo=UTC))
    assert state_at(t, datetime(2026, 6, 30, 23, 0)).state == "ExpiringSoon"
    assert state_at(t, datetime(2026, 7, 1, 1, 0)).state == "Grace"


def test_mode_without_a_time_uses_the_utc_clock(shanghai_clock):
    now = datetime.now(UTC)
    # In grace for 4 more hours: a clock read as local time (8 h ahead) would say Expired.
    c = LicenseClaims(site="demo", nbf=now - timedelta(days=30), exp=now - timedelta(hours=4),
                      graceUntil=now + timedelta(hours=4))
    assert evaluate_mode(c) == "readOnly"


def test_hq_logs_the_refused_site_truncated(caplog):
    caplog.set_level(logging.WARNING, logger="kameng.storefront.hq")
    for site in ("s" * 80, None):
        headers = {"Authorization": "Bearer nope"}
        if site:
            headers["X-Kameng-Site"] = site
        with pytest.raises(ApiRefused):
            authenticate_site(_request(headers))
    logged = [r for r in caplog.records if r.getMessage() == "site authentication failed"]
    assert [r.site for r in logged] == ["s" * 63, ""]


def test_an_unchanged_failing_condition_posts_no_new_event():
    def obs(**kw):
        base = dict(generation=1, namespace="n", url="u",
                    license=LicenseVerdict(True, "LicenseActive", "ok", state="Active"),
                    database_ready=False, database_message="down", deployment=None,
                    desired_replicas=1, now=datetime(2030, 1, 1, tzinfo=UTC))
        base.update(kw)
        return Observation(**base)

    first = compute(obs(), None)
    assert ("Warning", "NotProvisioned", "down") in transitions(None, first)
    again = compute(obs(now=datetime(2030, 1, 1, 1, tzinfo=UTC)), first)
    assert transitions(first, again) == []


def test_deployment_without_updated_replicas_is_rolling_out():
    dep = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}
    assert deployment_available(dep, 1) == (False, "Rolling out: 0/1 updated", 0)


def test_jitter_stays_within_the_fraction_and_spreads(monkeypatch):
    seen = [_jitter(100.0, 0.1) for _ in range(200)]
    assert all(90.0 <= s <= 110.0 for s in seen)
    assert min(seen) < 97  # both directions
    assert max(seen) > 103
    monkeypatch.setattr(random, "uniform", lambda a, b: b)
    assert _jitter(100.0, 0.1) == pytest.approx(110.0)
    monkeypatch.setattr(random, "uniform", lambda a, b: a)
    assert _jitter(100.0, 0.1) == pytest.approx(90.0)


def test_shop_product_name_by_locale():
    p = ShopProduct(id="g", name_zh="游戏卡", name_en="Game card", category="game", region="",
                    face_value=100, cost=90, price=99, stock=1)
    assert p.name("zh-CN") == "游戏卡"
    assert p.name("en") == "Game card"


# --- site config --------------------------------------------------------------------------


def test_site_config_json_is_canonical():
    s = SiteConfig(site="demo", display_name="演示", categories=["b", "a"])
    text = s.to_json()
    assert "演示" in text  # not \\u escaped
    keys = list(__import__("json").loads(text))
    assert keys == sorted(keys)
    assert '"displayName": "演示"' in text
    assert SiteConfig.from_json(text) == s


def test_site_config_errors_and_sources(tmp_path, monkeypatch):
    with pytest.raises(SiteConfigError, match=r"^invalid site config: "):
        SiteConfig.from_json("{}")
    f = tmp_path / "site.json"
    f.write_text(SiteConfig(site="fromfile").to_json(), encoding="utf-8")
    assert load_site_config(env={"KAMENG_SITE_CONFIG_FILE": str(f)}).site == "fromfile"
    monkeypatch.setenv("KAMENG_SITE_CONFIG", SiteConfig(site="fromenv").to_json())
    assert load_site_config().site == "fromenv"  # the process environment by default
    with pytest.raises(SiteConfigError) as exc:
        load_site_config(env={})
    assert str(exc.value).startswith(f"cannot read site config {DEFAULT_CONFIG_PATH}: ")
    with pytest.raises(SiteConfigError, match=r"^cannot read site config .*missing.json: "):
        load_site_config(tmp_path / "missing.json")


# --- token file ---------------------------------------------------------------------------


def _site() -> SiteConfig:
    return SiteConfig(site="demo", hq_public_key=public_key_to_b64(KEY))


def _tok(seq: int) -> str:
    now = datetime.now(UTC)
    return sign_token(LicenseClaims(site="demo", nbf=now - timedelta(days=1),
                                    exp=now + timedelta(days=60),
                                    graceUntil=now + timedelta(days=63), seq=seq), KEY)


def test_a_missing_token_file_is_reported_at_start(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="kameng.storefront.license")
    g = LicenseGuard(_site(), None, token_file=str(tmp_path / "absent"))
    assert g.problem == "license token is missing"
    assert [r.getMessage() for r in caplog.records] == ["license token refused, shop suspended"]


def test_an_unchanged_mtime_is_not_reread(tmp_path):
    f = tmp_path / "token"
    f.write_text(_tok(1))
    g = LicenseGuard(_site(), None, token_file=str(f), recheck_seconds=0)
    st = f.stat()
    f.write_text(_tok(2))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: the Secret did not change
    g.reload_if_changed()
    assert g.claims.seq == 1
