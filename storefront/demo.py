"""``kameng storefront --demo``: HQ plus one sample sub-site on loopback, with products and
card keys, so a newcomer can buy a card key in a browser minutes after cloning."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .testing import hq_add_product, hq_import_keys, run_stack, staff_client

SAMPLE = [
    ("steam-100", "game", "100.00", "92.50", ""),
    ("psn-200", "game", "200.00", "186.00", ""),
    ("cmcc-50", "mobile", "50.00", "49.00", "CN-31"),
]


def run_demo() -> int:
    dsn, redis_url = os.environ.get("KAMENG_PG_ADMIN_DSN"), os.environ.get("KAMENG_REDIS_URL")
    if not dsn or not redis_url:
        print("--demo needs KAMENG_PG_ADMIN_DSN and KAMENG_REDIS_URL: eval \"$(hack/devenv up)\"",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory() as tmp, \
            run_stack(dsn, redis_url, Path(tmp), site="localdemo") as st:
        hq = staff_client(st.hq_url, "admin@hq.local")
        for pid, cat, face, cost, region in SAMPLE:
            hq_add_product(hq, pid, cat, face, cost, region)
            hq_import_keys(hq, pid, [f"{pid.upper()}-DEMO-{i:04d}" for i in range(20)])
        print(f"HQ        {st.hq_url}/        admin: {st.hq_url}/admin  (admin@hq.local)")
        print(f"sub-site  {st.shop_url}/        admin: {st.shop_url}/admin")
        for role, email in st.members.items():
            print(f"  {role:<11} {email}")
        print(f"password of every demo account: {st.password}  (demo only)")
        print("Ctrl-C stops both and drops the demo databases.")
        sys.stdout.flush()
        stop.wait()
    return 0
