"""The public /apply form cannot be flooded, and a pending application cannot squat a name
for ever (issue 12, gap 3). On the dev environment's real PostgreSQL and Redis:

- per client address and in all, Redis-backed, with keys namespaced per HQ instance (a
  second HQ on the same Redis is not affected by the first one's traffic);
- a pending application older than the expiry setting is expired by HQ's background
  sweep, audited, can no longer be decided, and frees its site name and domain.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from kameng.contracts.license_token import generate_signing_key, public_key_to_b64
from kameng_storefront.web.forwarded import parse_networks
from tests.integration.test_onboarding import apply_form, decide, reviewer, submit
from tests.support.storefront import run_hq

pytestmark = pytest.mark.integration

RUN = secrets.token_hex(3)


def _hq(pg_admin_dsn: str, redis_url: str, tmp: Path, **overrides: Any) -> Any:
    # Trusting the loopback proxy lets the test speak for other client addresses
    # (X-Forwarded-For), as a real Ingress does.
    return run_hq(pg_admin_dsn, redis_url, public_key_to_b64(generate_signing_key()),
                  tmp / f"creds-{secrets.token_hex(3)}",
                  overrides={"onboarding_mode": "gitops",
                             "trusted_proxies": parse_networks("127.0.0.1/32"), **overrides})


def _post_from(hq_url: str, client: str, n: int) -> int:
    from tests.integration.test_onboarding import PDF, tiny_png
    from tests.support.storefront import csrf_from

    c = httpx.Client(base_url=hq_url, timeout=30, headers={"X-Forwarded-For": client})
    data = {"csrf": csrf_from(c.get("/apply").text), "company": "Acme", "contact_name": "A",
            "contact_email": "a@acme.example", "site_name": f"rl{n}-{RUN}",
            "domain": f"rl{n}-{RUN}.example.com", "plan": "basic",
            "categories": "game-cards", "regions": "CN-31"}
    r = c.post("/apply", data=data, files=[("logo", ("l.png", tiny_png(), "image/png")),
                                           ("documents", ("d.pdf", PDF, "application/pdf"))])
    if r.status_code == 429:
        assert r.headers["retry-after"] == "3600"
    return r.status_code


def test_apply_is_rate_limited_per_client_and_in_all_per_hq(
        pg_admin_dsn: str, redis_url: str, tmp_path: Path) -> None:
    with _hq(pg_admin_dsn, redis_url, tmp_path, apply_per_client_per_hour=2,
             apply_per_hour=4) as (hq_url, dsn), \
            _hq(pg_admin_dsn, redis_url, tmp_path, apply_per_client_per_hour=2,
                apply_per_hour=4) as (other_hq, _):
        a, b = "203.0.113.7", "2001:db8:1:2::10"
        assert [_post_from(hq_url, a, n) for n in (1, 2, 3)] == [303, 303, 429]
        # Another address in the same IPv6 /64 is the same client; a new /64 is not...
        assert _post_from(hq_url, b, 4) == 303
        # ...but the fifth submission in all is over HQ's global budget of 4.
        assert _post_from(hq_url, "2001:db8:9::1", 5) == 429
        assert _post_from(hq_url, "198.51.100.1", 6) == 429
        # The refused submissions stored nothing.
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM partner_applications").fetchone() == (3,)
        # A second HQ on the same Redis counts its own traffic only.
        assert _post_from(other_hq, a, 7) == 303
        # Keys are per HQ instance, expire by themselves, and hold no client address.
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        keys = [k for k in r.scan_iter("hq:*:apply:*")]
        prefixes = {k.split(":")[1] for k in keys}
        assert len(prefixes) >= 2
        assert all(0 < r.ttl(k) <= 3600 for k in keys)
        assert not any(a in k or "2001" in k for k in keys)


def test_stale_pending_application_expires_and_frees_its_name(
        pg_admin_dsn: str, redis_url: str, tmp_path: Path) -> None:
    site, fresh = f"exp-{RUN}", f"fresh-{RUN}"
    with _hq(pg_admin_dsn, redis_url, tmp_path, application_expiry_days=2,
             onboarding_sweep_seconds=0.3) as (hq_url, dsn):
        aid, status_path = submit(hq_url, site)
        fresh_id, _ = submit(hq_url, fresh)
        # While it is pending, nobody else may claim the name.
        r, _ = apply_form(hq_url, site_name=site, domain=f"other-{RUN}.example.com")
        assert r.status_code == 422
        assert 'data-field="site_name"' in r.text
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Nobody reviewed it for 3 days (the other one is 1 day old: still pending).
            conn.execute("UPDATE partner_applications SET created_at = now() - interval"
                         " '3 days' WHERE id = %s", (aid,))
            conn.execute("UPDATE partner_applications SET created_at = now() - interval"
                         " '1 day' WHERE id = %s", (fresh_id,))
            deadline = time.monotonic() + 30
            status = ""
            while time.monotonic() < deadline:
                status = conn.execute("SELECT status FROM partner_applications WHERE id = %s",
                                      (aid,)).fetchone()[0]  # type: ignore[index]
                if status == "expired":
                    break
                time.sleep(0.2)
            assert status == "expired"
            assert conn.execute("SELECT status FROM partner_applications WHERE id = %s",
                                (fresh_id,)).fetchone() == ("pending",)
            trail = conn.execute("SELECT actor, action, detail FROM hq_audit WHERE"
                                 " subject = %s ORDER BY id", (f"application:{aid}",)).fetchall()
        assert [t[1] for t in trail] == ["submitted", "expired"]
        assert trail[1][0] == "kameng-hq:expiry"
        assert trail[1][2]["site"] == site
        # The partner's page says so; a reviewer can no longer approve it.
        page = httpx.get(hq_url + status_path, timeout=30)
        assert 'data-status="expired"' in page.text
        hq = reviewer(hq_url)
        decide(hq, aid, "approve")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT status FROM partner_applications WHERE id = %s",
                                (aid,)).fetchone() == ("expired",)
        # The name and domain are free again.
        again, _ = submit(hq_url, site)
        assert again != aid
        assert re.match(r"^A[0-9a-f]+$", again)
