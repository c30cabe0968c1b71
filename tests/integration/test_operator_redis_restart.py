"""Redis restarts without an ACL file (the common setup: RDB and AOF keep data, not
users): every site's ACL user is gone, and every shop is refused at AUTH. The operator
sees the new run_id and sets every user again: back within 10 s of Redis answering
(before: at the next resync, minutes), with the site's own credentials working again.

A Redis of this test's own (the dev environment's is shared by every test)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from kameng.provision.names import redis_user
from tests.support.operator import OperatorProcess, batch_objects, remove_batch_site
from tests.support.servers import PrivateRedis

from .test_operator_lifecycle import get, secret_value, wait_for

RESTORED_WITHIN_S = 10.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(tmp_path).start()
    try:
        yield r
    finally:
        r.kill()


def test_acl_users_are_back_within_10s_of_a_redis_restart(
        private_redis: PrivateRedis, devenv: dict[str, str], kubectl: Any,
        tmp_path: Path) -> None:
    prefix = f"it-rrs{uuid.uuid4().hex[:4]}"
    rp, lic, ss = batch_objects(prefix, 1)
    site = ss["metadata"]["name"]
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], private_redis.url,
                         tmp_path / "operator.log").start()
    admin = redis.Redis.from_url(private_redis.url)
    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all([rp, lic, ss]))
        wait_for(lambda: (get(kubectl, "subsite", site).get("status") or {}).get("phase")
                 == "Ready", 120, f"{site} Ready")
        user = redis_user(site)
        assert admin.acl_getuser(user) is not None
        shop_url = secret_value(kubectl, f"kameng-{site}", "storefront-redis", "url")
        assert redis.Redis.from_url(shop_url).set(f"site:{site}:probe", "1")

        private_redis.kill()
        private_redis.start()  # same port and password, no users but the admin
        back = time.monotonic()
        assert admin.acl_getuser(user) is None  # gone with the restart
        while admin.acl_getuser(user) is None:
            assert time.monotonic() - back < RESTORED_WITHIN_S, op.log_tail(30)
            time.sleep(0.1)
        restored = time.monotonic() - back
        print(f"ACL user back {restored:.2f} s after Redis answered again")
        # The shop's own credentials work again, with the same rights as before.
        shop = redis.Redis.from_url(shop_url)
        assert shop.set(f"site:{site}:probe", "2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            shop.get("kameng:acl-owners")
        restarts = re.search(r"^kameng_redis_restarts_total ([0-9.e+]+)$", op.metrics(), re.M)
        assert restarts is not None
        assert float(restarts.group(1)) == 1.0
    finally:
        remove_batch_site(kubectl, site, rp["metadata"]["name"])
        op.stop()
