"""``kameng storefront --workers 2``: one pod, two worker processes on the same ports.
The background loops run in exactly one of them (and move to the other when it dies), the
metrics answer for the whole pod whichever worker is scraped, and a catalogue change shows
on every worker's cached page at once."""

from __future__ import annotations

import os
import re
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    hq_add_product,
    staff_client,
    start_process_stack,
    wait_for,
)

pytestmark = pytest.mark.integration
PASSWORD = "workers-password-123"


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _metric(ops_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{ops_url}/metrics").text
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _leader(worker_pids: list[int]) -> int:
    """The worker holding the pod's leader lock (from the kernel's lock table)."""
    env = Path(f"/proc/{worker_pids[0]}/environ").read_bytes().split(b"\0")
    shared = next(e.split(b"=", 1)[1] for e in env if e.startswith(b"KAMENG_POD_SHARED_DIR="))
    inode = os.stat(Path(shared.decode()) / "leader.lock").st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "FLOCK" in f and f[-3].endswith(f":{inode}") and int(f[-4]) in worker_pids:
            return int(f[-4])
    raise AssertionError("no worker holds the leader lock")


def _price(url: str) -> str | None:
    # A new connection per request: the kernel spreads them over the workers.
    with httpx.Client(timeout=HTTP_TIMEOUT) as c:
        m = re.search(r'class="price">¥([\d.]+)<', c.get(f"{url}/").text)
    return m.group(1) if m else None


def test_two_workers_share_one_pod(pg_admin_dsn, redis_url, tmp_path):
    with ExitStack() as stack:
        st = start_process_stack(stack, pg_admin_dsn, redis_url, tmp_path, workers=2,
                                 site="wk", password=PASSWORD)
        workers = wait_for(lambda: (w := _children(st.pids["shop"])) and len(w) == 2 and w,
                           timeout=30)
        hq = staff_client(st.hq_url, "admin@hq.local", PASSWORD,
                          replace_bootstrap_with=f"{PASSWORD}-own")
        hq_add_product(hq, "w-10", "game", "10.00", "9.00")
        first = wait_for(lambda: _price(st.shop_url), timeout=30)
        # The loops run once per pod: exactly one live worker leads.
        assert wait_for(lambda: _metric(st.shop_ops_url, "kameng_storefront_background_leader")
                        == 1, timeout=15)

        # Metrics answer for the pod: 40 requests spread over both workers all count,
        # whichever worker answers the scrape.
        before = _metric(st.shop_ops_url, "kameng_storefront_request_seconds_count",
                         route="index")
        for _ in range(40):
            assert _price(st.shop_url) == first
        for _ in range(3):
            after = _metric(st.shop_ops_url, "kameng_storefront_request_seconds_count",
                            route="index")
            assert after - before == 40

        # A price change synced by the leader shows on every worker's cached page.
        hq_add_product(hq, "w-10", "game", "20.00", "19.00")
        wait_for(lambda: _price(st.shop_url) != first, timeout=10)
        changed = _price(st.shop_url)
        assert all(_price(st.shop_url) == changed for _ in range(20))

        # The leader dies: the other worker takes the loops over, the supervisor restarts
        # the dead one, and the pod still has exactly one leader that still syncs.
        leader = _leader(workers)
        os.kill(leader, signal.SIGKILL)
        wait_for(lambda: (w := _children(st.pids["shop"])) and len(w) == 2 and leader not in w,
                 timeout=30)
        time.sleep(3)  # past a takeover poll
        assert wait_for(lambda: _metric(st.shop_ops_url, "kameng_storefront_background_leader")
                        == 1, timeout=15)
        hq_add_product(hq, "w-10", "game", "30.00", "29.00")
        wait_for(lambda: _price(st.shop_url) not in (first, changed), timeout=15)
        new = _price(st.shop_url)
        assert all(_price(st.shop_url) == new for _ in range(20))
