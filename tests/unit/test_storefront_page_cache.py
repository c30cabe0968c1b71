"""The page cache's pod-wide counter (shared by worker processes, no lost bump), the
cache's validity rule, and the license verdict the shop caches per request."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime, timedelta

from kameng.contracts.license_token import (
    LicenseClaims,
    generate_signing_key,
    public_key_to_b64,
    sign_token,
)
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.web.license_guard import LicenseGuard
from kameng_storefront.web.page_cache import PageCache, SharedCounter


def _bump_many(path: str, n: int, start) -> None:
    counter = SharedCounter(path)  # type: ignore[arg-type]
    start.wait()  # all at once: unlocked read-modify-writes would overlap and lose bumps
    for _ in range(n):
        counter.bump()


def test_counter_is_shared_between_processes_and_loses_no_bump(tmp_path):
    path = tmp_path / "generation"
    mine = SharedCounter(path)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as the workers are
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_bump_many, args=(str(path), 20000, start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert mine.value() == 60000  # every bump counted, seen here without a reload


def test_page_is_served_until_the_counter_moves(tmp_path):
    cache = PageCache(SharedCounter(tmp_path / "g"))
    other_worker = SharedCounter(tmp_path / "g")
    generation = cache.counter.value()
    page = cache.put(("index", "en"), generation, b"<html>old</html>")
    assert cache.get(("index", "en")) == page
    assert page.etag.startswith('"')
    assert page.etag.endswith('"')
    assert cache.get(("index", "zh-CN")) is None
    other_worker.bump()  # e.g. the worker that synced the catalogue
    assert cache.get(("index", "en")) is None
    # A page rendered from data read before a bump is stale the moment it is stored.
    cache.put(("index", "en"), generation, b"<html>read before the bump</html>")
    assert cache.get(("index", "en")) is None


def test_observing_a_changed_source_invalidates():
    cache = PageCache(SharedCounter())
    cache.observe(("etag-1", 3))
    page = cache.put("k", cache.counter.value(), b"x")
    cache.observe(("etag-1", 3))
    assert cache.get("k") == page
    cache.observe(("etag-2", 3))  # another replica synced the catalogue
    assert cache.get("k") is None


def test_cached_license_verdict_changes_at_the_term_end():
    key = generate_signing_key()
    now = datetime.now(UTC)
    token = sign_token(LicenseClaims(
        site="demo", categories=["game"], regions=[], nbf=now - timedelta(days=1),
        exp=now + timedelta(seconds=1.5), graceUntil=now + timedelta(days=3), seq=1), key)
    guard = LicenseGuard(SiteConfig(site="demo", hq_public_key=public_key_to_b64(key)), token)
    assert guard.mode() == "normal"
    assert guard.mode() == "normal"  # from the cache
    time.sleep(1.6)
    assert guard.mode() == "readOnly"  # the end of the term is not missed
