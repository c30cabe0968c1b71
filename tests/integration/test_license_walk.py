"""The whole license life cycle on the dev environment, with real short terms (seconds):
a License walks Active → ExpiringSoon → Grace → Expired on time, and every side decides
from the one life cycle — the operator (License status, one Event and one metric
increment per transition), the shop running on the operator's own token (read-only in
grace, closed when expired), HQ (payments refused in grace, payments and fulfilment
when expired), the risk worker (blocks sales) and settlement (payouts held). Expiry
notices go out once per lead time (an operator restart resends nothing), and
`kubectl kameng renew` restores the site within seconds."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kameng.contracts import hq_api
from kameng.contracts.hq_auth import REGISTRY_SECRET, SiteCredential
from kameng.contracts.license_token import load_private_key, verify_token
from kameng.contracts.pod import HQ_KEYS_SECRET, HQ_SIGNING_KEY, LICENSE_SECRET
from kameng.kube.client import Kube
from kameng.workers.risk.source import KubeSource
from kameng.workers.risk.worker import Policies, license_block
from kameng.workers.settlement.licenses import LicenseBook
from tests.support.net import HTTP_TIMEOUT
from tests.support.operator import OperatorProcess
from tests.support.storefront import (
    HQ_ADMIN,
    hq_add_product,
    hq_import_keys,
    record_paid_payment,
    run_stack,
    staff_client,
)

from .test_kubectl_plugin import plugin
from .test_operator_lifecycle import fresh_start, get, sample_objects, wait_for

pytestmark = pytest.mark.integration
SITE, RP = "it-walk", "it-walk-rp"
# Seconds after the License is applied: ExpiringSoon at 40, notices at 42 and 92 (the
# operator is restarted in between), the end of the term at 100 (Grace), Expired at 115.
# Wide enough for a loaded machine; each lag is the operator's (its Event's time against
# the boundary), not the test's polling.
END_AFTER, SOON_LEAD, GRACE = 100, 60, 15
LEADS = ("58s", "8s")


def _rfc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenMirror:
    """The kubelet's part: the operator's `license` Secret copied into the shop's token
    file whenever it changes (polled every 100 ms)."""

    def __init__(self, kubectl: Any, target: Path) -> None:
        self.kubectl, self.target = kubectl, target
        self.token = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> str:
        out = self.kubectl("get", "secret", LICENSE_SECRET, "-n", f"kameng-{SITE}", "-o",
                           "jsonpath={.data.token}", check=False)
        return base64.b64decode(out.stdout).decode() if out.returncode == 0 else ""

    def _run(self) -> None:
        while not self._stop.is_set():
            token = self.read()
            if token and token != self.token:
                tmp = self.target.with_suffix(".tmp")
                tmp.write_text(token, encoding="utf-8")
                tmp.replace(self.target)
                self.token = token
            self._stop.wait(0.1)

    def __enter__(self) -> TokenMirror:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


def _operator(devenv: dict[str, str], spool: Path, log: Path) -> OperatorProcess:
    return OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                           log, extra_env={"KAMENG_NOTIFY_SPOOL_DIR": str(spool)}).start()


@pytest.fixture(scope="module")
def walk_env(devenv: dict[str, str], kubectl: Any, spool: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("op")
    op = _operator(devenv, spool, logs / "operator.log")
    fresh_start(kubectl, SITE)
    kubectl("delete", "license", SITE, "--ignore-not-found")
    secret = json.loads(kubectl("get", "secret", HQ_KEYS_SECRET, "-n", "kameng-system",
                                "-o", "json").stdout)
    key = load_private_key(base64.b64decode(secret["data"][HQ_SIGNING_KEY.key]))
    env: dict[str, Any] = {"op": op, "logs": logs}
    try:
        with run_stack(devenv["pg_admin_dsn"], devenv["redis_url"],
                       tmp_path_factory.mktemp("walk"), site=SITE, signing_key=key) as st:
            env["stack"] = st
            yield env
    finally:
        kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=true", timeout=60)
        kubectl("delete", "license", SITE, "--ignore-not-found")
        kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
        env["op"].stop()


def _shop_mode(stack: Any) -> str:
    return str(httpx.get(f"{stack.shop_ops_url}/readyz").json()["licenseMode"])


def _hq(stack: Any, path: str, token: str, body: dict[str, Any]) -> str:
    r = httpx.post(f"{stack.hq_url}{path}", headers=stack.api_headers(token), json=body)
    return str(r.json().get("error", "")) if r.status_code >= 400 else "ok"


async def _workers(kubeconfig: str) -> tuple[bool | None, Any]:
    """Settlement's and the risk worker's view of the site, read as they read it."""
    kube = Kube.from_environment(kubeconfig)
    try:
        book = LicenseBook(kube, ttl=0)
        await book.refresh(force=True)
        pols = Policies()
        await KubeSource(kube).refresh_licences(pols)
        sale = {"event": "order.paid", "ts": int(time.time() * 1000)}
        return book.held(SITE), license_block(sale, pols.licences.get(SITE))
    finally:
        await kube.close()


def _banner(stack: Any) -> str | None:
    """The state the partner's back-office home page warns about (None: no banner)."""
    c = staff_client(stack.shop_url, next(iter(stack.members.values())))
    try:
        m = re.search(r'id="license-notice" data-state="(\w+)"', c.get("/admin").text)
    finally:
        c.close()
    return m.group(1) if m else None


def _state(kubectl: Any) -> str | None:
    return get(kubectl, "license", SITE).get("status", {}).get("state")


def _events(kubectl: Any) -> list[dict[str, Any]]:
    """This License's Events (by uid: Events of an earlier run's it-walk outlive it)."""
    uid = get(kubectl, "license", SITE)["metadata"]["uid"]
    return [e for e in get(kubectl, "events", "-n", "default")["items"]
            if e["involvedObject"].get("kind") == "License"
            and e["involvedObject"].get("uid") == uid]


def _metric(op: OperatorProcess, name: str, **labels: str) -> float:
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{sel}\}} (\S+)$", op.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def test_walk_expiring_soon_grace_expired_on_time_and_renewal_restores(
        walk_env: dict[str, Any], devenv: dict[str, str], kubectl: Any, spool: Path) -> None:
    st = walk_env["stack"]
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    end = t0 + timedelta(seconds=END_AFTER)
    docs = sample_objects(SITE, RP)
    docs[0]["spec"].update(
        categories=["game", "mobile"], regions=["CN-31"],
        term={"start": _rfc(t0 - timedelta(days=1)), "end": _rfc(end)},
        gracePeriod=f"{GRACE}s", expiringSoonBefore=f"{SOON_LEAD}s",
        notices={"before": list(LEADS), "recipients": ["ops@partner.example"]})
    docs[0]["spec"]["fees"]["revenueShare"] = []
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    wait_for(lambda: _state(kubectl) == "Active", 15, "Active")
    with TokenMirror(kubectl, st.token_file) as mirror:
        wait_for(lambda: mirror.token and _shop_mode(st) == "normal", 20, "shop on the token")
        assert _banner(st) is None
        assert _hq(st, hq_api.PAYMENTS_PATH, mirror.token, {}).startswith("license_") is False
        held, block = asyncio.run(_workers(devenv["kubeconfig"]))
        assert held is False
        assert block is None
        assert datetime.now(UTC) < end - timedelta(seconds=SOON_LEAD), \
            "the Active checks took longer than the Active phase; widen END_AFTER"

        seen: dict[str, float] = {}

        def reach(state: str, at: datetime, slack: float = 5.0) -> None:
            wait_for(lambda: _state(kubectl) == state,
                     max(0.0, (at - datetime.now(UTC)).total_seconds()) + 60, state)
            event = wait_for(lambda: [e for e in _events(kubectl)
                                      if e["reason"] == f"License{state}"], 15, "Event")[0]
            posted = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
            lag = (posted - at).total_seconds()
            seen[state] = round(lag, 2)
            assert 0 <= lag < slack, f"{state} {lag:.1f}s after its boundary"

        reach("ExpiringSoon", end - timedelta(seconds=SOON_LEAD))
        assert _shop_mode(st) == "normal"  # still sells
        wait_for(lambda: _banner(st) == "ExpiringSoon", 5, "banner in the back office")
        printed = kubectl("get", "license", SITE).stdout
        assert "LEFT" in printed
        assert re.search(r"ExpiringSoon\s+\S+\s+1m\s", printed), printed
        # The first notice (28s before the end); then the operator is restarted: the
        # record in status keeps it from being sent again.
        wait_for(lambda: len(list(spool.glob("*.json"))) == 1, 15, "first notice")
        walk_env["op"].stop()
        # The next tests of the module run on this operator: the module's, not this test's.
        walk_env["op"] = _operator(devenv, spool,
                                   walk_env["logs"] / "operator-2.log").for_module()

        reach("Grace", end)
        wait_for(lambda: _shop_mode(st) == "readOnly", 5, "shop read-only in grace")
        token = mirror.token
        assert _hq(st, hq_api.PAYMENTS_PATH, token, {}) == "license_readOnly"
        assert _banner(st) == "Grace"
        assert verify_token(token, st.signing_key.public_key()).warn_at is not None

        reach("Expired", end + timedelta(seconds=GRACE))
        wait_for(lambda: _shop_mode(st) == "suspended", 5, "shop closed when expired")
        assert httpx.get(f"{st.shop_url}/").status_code == 503
        token = mirror.token
        assert _hq(st, hq_api.PAYMENTS_PATH, token, {}) == "license_suspended"
        assert _hq(st, hq_api.FULFIL_PATH, token,
                   {"order_id": "W1", "product_id": "x"}) == "license_suspended"
        held, block = asyncio.run(_workers(devenv["kubeconfig"]))
        assert held is True
        assert block is not None
        assert (block.action, block.rule) == ("block", "license-expired")

        # Notices: one per lead time, no more (the restart resent nothing).
        sent = [json.loads(f.read_text()) for f in sorted(spool.glob("*.json"))]
        assert sorted(n["before"] for n in sent) == sorted(LEADS)
        # The License's extra recipient and the SubSite's owner.
        assert {tuple(n["recipients"]) for n in sent} == {("ops@demo-partner.example",
                                                           "ops@partner.example")}
        lic = get(kubectl, "license", SITE)
        assert sorted(r["before"] for r in lic["status"]["noticesSent"]) == sorted(LEADS)
        assert lic["status"]["expiresIn"] == "expired"
        # One Event per transition and per notice, however often it was reconciled.
        reasons = [e["reason"] for e in _events(kubectl)]
        for reason in ("LicenseExpiringSoon", "LicenseGrace", "LicenseExpired"):
            assert reasons.count(reason) == 1, reasons
        assert reasons.count("LicenseExpiryNotice") == 2, reasons
        # The restarted operator made the last two transitions: counted once each.
        op = walk_env["op"]
        assert _metric(op, "kameng_license_transitions_total", state="Grace") == 1
        assert _metric(op, "kameng_license_transitions_total", state="Expired") == 1

        # Renewal (FromExpiry by default): the site sells again within seconds.
        started = time.monotonic()
        plugin(devenv, "renew", SITE, "--extend", "1h")
        command = time.monotonic() - started  # the CLI's own start-up, on a loaded machine
        wait_for(lambda: _shop_mode(st) == "normal", 30, "shop restored")
        selling_at = datetime.now(UTC)
        # From the renewal's write (its managedFields time, to the second) to the shop
        # selling again on the new token.
        lic = json.loads(kubectl("get", "license", SITE, "-o", "json",
                                 "--show-managed-fields").stdout)
        spec_writes = [m for m in lic["metadata"]["managedFields"] if not m.get("subresource")]
        patched_at = max(datetime.fromisoformat(m["time"].replace("Z", "+00:00"))
                         for m in spec_writes)
        recovered = (selling_at - patched_at).total_seconds()
        assert _state(kubectl) == "Active"
        assert _hq(st, hq_api.PAYMENTS_PATH, mirror.token, {}).startswith("license_") is False
        held, block = asyncio.run(_workers(devenv["kubeconfig"]))
        assert held is False
        assert block is None
        lic = get(kubectl, "license", SITE)
        assert not lic["status"].get("noticesSent")  # a new term: notices start afresh
        print(f"\nlag after each boundary (s): {seen}; renewal written → shop selling: "
              f"{recovered:.2f}s (±1 s; the renew command itself took {command:.1f}s)")
        assert recovered < 10


def _registry_entry(kubectl: Any) -> SiteCredential | None:
    out = kubectl("get", "secret", REGISTRY_SECRET, "-n", "kameng-system", "-o",
                  f"jsonpath={{.data.{SITE}}}", check=False)
    if out.returncode != 0 or not out.stdout:
        return None
    return SiteCredential.from_json(base64.b64decode(out.stdout))


def test_scope_taken_away_mid_term_is_refused_at_once(walk_env: dict[str, Any],
                                                      kubectl: Any) -> None:
    """Categories narrowed mid-term: HQ refuses the removed category at once, even for
    the shop's older token (the operator publishes the scope to HQ's registry), and the
    shop stops offering it when its new token arrives."""
    st = walk_env["stack"]
    hq = staff_client(st.hq_url, HQ_ADMIN)
    hq_add_product(hq, "walk-g1", "game", "10.00", "9.50", region="CN-31")
    hq_import_keys(hq, "walk-g1", [f"WG-{i}" for i in range(3)])
    shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st.shop_url)
    with TokenMirror(kubectl, st.token_file) as mirror:
        wait_for(lambda: mirror.token and _shop_mode(st) == "normal", 20, "shop selling")
        wait_for(lambda: "walk-g1" in shop.get("/").text, 20, "product in the shop")
        old_token = mirror.token
        record_paid_payment(st, "WS1", 1000)
        record_paid_payment(st, "WS2", 1000)
        assert _hq(st, hq_api.FULFIL_PATH, old_token,
                   {"order_id": "WS1", "product_id": "walk-g1"}) == "ok"

        started = time.monotonic()
        kubectl("patch", "license", SITE, "--type=merge", "-p",
                json.dumps({"spec": {"categories": ["mobile"]}}))
        # HQ's mounted registry follows the operator's (the kubelet's part, done here).
        entry = wait_for(lambda: (e := _registry_entry(kubectl)) and e.categories == ["mobile"]
                         and e, 15, "scope published to HQ's registry")
        st.publish_credential(categories=entry.categories, regions=entry.regions)
        assert _hq(st, hq_api.FULFIL_PATH, old_token,
                   {"order_id": "WS2", "product_id": "walk-g1"}) == "out_of_license_scope"
        at_hq = time.monotonic() - started
        wait_for(lambda: "walk-g1" not in shop.get("/").text, 20, "product gone from the shop")
        in_shop = time.monotonic() - started
    print(f"\nscope change → refused at HQ {at_hq:.2f}s, gone from the shop {in_shop:.2f}s")
    assert at_hq < 10
