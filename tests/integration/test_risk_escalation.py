"""Site escalation on the real API server, operator and Redis: a site whose fraud rate
crosses raiseAt is suspended through a hold annotation (never the spec: `kubectl diff`
against the Git manifest stays empty, as Argo CD's diff would), with one Event; the
operator folds the hold into `kubectl get ss,lic`; only a person lifts it. Also the
RiskPolicy status the worker writes for a rule that does not compile."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from kameng.api.holds import holds_of
from kameng.contracts.events import OrderEvent
from kameng.contracts.siteconfig import SiteConfig
from kameng.controller.agreements import license_lifecycle
from kameng.kube.client import Kube
from kameng.workers.risk.escalation import Escalation
from kameng.workers.risk.source import KubeSource
from kameng.workers.risk.store import RiskStore
from kameng.workers.risk.worker import Policies, RiskWorker
from kameng.workers.streams import ConsumerConfig
from tests.support.operator import OperatorProcess
from tests.support.risk import hq_database

from .test_kubectl_plugin import plugin
from .test_operator_lifecycle import fresh_start, get, sample_objects, wait_for

SITE, RP, POLICY = "it-risk", "it-risk-rp", "it-risk-policy"


def _rfc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def git_docs() -> list[dict[str, Any]]:
    """What Git holds for the site: applied with `kubectl apply` as Argo CD would."""
    now = datetime.now(UTC).replace(microsecond=0)
    docs = sample_objects(SITE, RP)
    docs[0]["spec"]["term"] = {"start": _rfc(now - timedelta(days=1)),
                               "end": _rfc(now + timedelta(days=400))}
    policy = {"apiVersion": "kameng.io/v1alpha1", "kind": "RiskPolicy",
              "metadata": {"name": POLICY}, "spec": {
                  "sites": [SITE],
                  "rules": [
                      {"name": "huge", "expression": "event.amount > 900000",
                       "action": "block", "reason": "huge order"},
                      {"name": "broken", "expression": "event.amount >", "action": "block"}],
                  "siteEscalation": {"raiseAt": 0.2, "liftAt": 0.05, "window": "1h",
                                     "minOrders": 10}}}
    return [*docs, policy]


@pytest.fixture(scope="module")
def operator(devenv: dict[str, str], kubectl: Any, git_docs: list[dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(devenv["kubeconfig"], devenv["pg_admin_dsn"], devenv["redis_url"],
                         tmp_path_factory.mktemp("op") / "operator.log").start()
    fresh_start(kubectl, SITE)
    kubectl("delete", "license", SITE, "--ignore-not-found")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(git_docs))
    kubectl("wait", "--for=condition=Ready", f"subsite/{SITE}", "--timeout=60s", timeout=90)
    yield op
    kubectl("delete", "subsite", SITE, "--ignore-not-found", "--wait=true", timeout=60)
    kubectl("delete", "license", SITE, "--ignore-not-found")
    kubectl("delete", "riskpolicy", POLICY, "--ignore-not-found")
    kubectl("delete", "rolepolicy", RP, "--ignore-not-found")
    op.stop()


def _no_drift(kubectl: Any, docs: list[dict[str, Any]]) -> None:
    # `kubectl diff` is the server-side dry-run of applying Git's manifest again: empty
    # (exit 0) means a sync would change nothing, the same judgement as Argo CD's diff.
    out = kubectl("diff", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def _mode(kubectl: Any) -> str:
    cfg = SiteConfig.from_json(get(kubectl, "configmap", "storefront-config", "-n",
                                   f"kameng-{SITE}")["data"]["site.json"])
    return cfg.mode


def _risk_events(kubectl: Any, since: str) -> list[dict[str, Any]]:
    # Events of earlier runs live on (an hour): only this run's count.
    return [e for e in get(kubectl, "events", "-n", "default")["items"]
            if e["involvedObject"].get("name") == SITE and e["reason"] == "RiskHoldRaised"
            and (e.get("eventTime") or e.get("lastTimestamp") or "") >= since]


@pytest.fixture(scope="module")
def hq_dsn(pg_admin_dsn: str) -> Iterator[str]:
    with hq_database(pg_admin_dsn) as dsn:
        yield dsn


async def test_fraud_rate_suspends_the_site_until_a_person_releases_it(
        operator: OperatorProcess, kubectl: Any, devenv: dict[str, str],
        git_docs: list[dict[str, Any]], hq_dsn: str) -> None:
    client = aioredis.from_url(devenv["redis_url"], decode_responses=True)
    kube = Kube.from_environment(devenv["kubeconfig"])
    tag = uuid.uuid4().hex[:8]
    prefix = f"ktest:{tag}:orders:"
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    try:
        policies = Policies()
        source = KubeSource(kube)
        await source.refresh(policies)
        # The broken rule is reported in status, naming it; the other one runs.
        pol = wait_for(lambda: get(kubectl, "riskpolicy", POLICY).get("status"), 10,
                       "RiskPolicy status")
        cond = pol["conditions"][0]
        assert (cond["type"], cond["status"]) == ("RulesCompiled", "False")
        assert "'broken'" in cond["message"]
        assert pol["activeRules"] == 1
        printed = kubectl("get", "risk", POLICY).stdout
        assert "False" in printed
        rv = get(kubectl, "riskpolicy", POLICY)["metadata"]["resourceVersion"]
        await source.refresh(policies)  # nothing changed: no write
        assert get(kubectl, "riskpolicy", POLICY)["metadata"]["resourceVersion"] == rv

        worker = RiskWorker(client, policies, RiskStore(hq_dsn), ConsumerConfig(
            group="risk", consumer="t", prefix=prefix, block_ms=20, discover_seconds=0,
            claim_seconds=3600, trim_seconds=3600), escalation=Escalation(client, kube))

        async def paid(n: int, amount: int) -> None:
            for i in range(n):
                ev = OrderEvent.for_order("order.paid", site=SITE,
                                          order_id=f"{tag}-{uuid.uuid4().hex[:8]}-{i}",
                                          customer=f"c{i}", amount=amount)
                await client.xadd(prefix + SITE, ev.to_fields())
            done = 0
            for _ in range(100):
                done += await worker.consumer.step()
                if done >= n:
                    return
            raise AssertionError("events not decided")

        # Below minOrders nothing happens, whatever the rate.
        await paid(3, 1_000_000)
        await paid(5, 1000)
        assert not holds_of(get(kubectl, "license", SITE)["metadata"].get("annotations"))
        # 10 orders, 3 blocked: 30% ≥ raiseAt 20% → suspended.
        await paid(2, 1000)
        lic = wait_for(lambda: (o := get(kubectl, "license", SITE)).get("status", {})
                       .get("state") == "Suspended" and o, 15, "License Suspended")
        holds = holds_of(lic["metadata"]["annotations"])
        assert [h.kind for h in holds] == ["risk"]
        assert "fraud rate 30.0%" in holds[0].reason
        assert holds[0].by == "risk-worker"
        assert "kubectl kameng release" in lic["status"]["conditions"][0]["message"]
        assert license_lifecycle(lic["spec"], datetime.now(UTC), holds).payouts_held
        # The spec Git owns is untouched: no drift.
        assert lic["spec"] == {**git_docs[0]["spec"], **{k: v for k, v in lic["spec"].items()
                                                        if k not in git_docs[0]["spec"]}}
        _no_drift(kubectl, git_docs)
        wait_for(lambda: _mode(kubectl) == "suspended", 20, "storefront mode suspended")
        wait_for(lambda: get(kubectl, "subsite", SITE)["status"].get("licenseState")
                 == "Suspended", 20, "SubSite licenseState")
        assert "Suspended" in kubectl("get", "ss,lic", SITE).stdout
        assert len(wait_for(lambda: _risk_events(kubectl, since), 10, "Event")) == 1

        # More fraud while held: no second hold, no second Event (one per change).
        await paid(3, 1_000_000)
        assert len(_risk_events(kubectl, since)) == 1

        # A person releases it; the worker does not re-raise on the same bad orders
        # (disarmed until the rate falls below liftAt).
        out = plugin(devenv, "release", SITE)
        assert out.returncode == 0, out.stderr
        assert "risk hold released" in out.stdout
        wait_for(lambda: get(kubectl, "license", SITE)["status"]["state"] == "Active", 15,
                 "Active after release")
        wait_for(lambda: _mode(kubectl) == "normal", 20, "storefront mode normal")
        await source.refresh(policies)
        await paid(1, 1_000_000)
        assert not holds_of(get(kubectl, "license", SITE)["metadata"].get("annotations"))
        _no_drift(kubectl, git_docs)
        assert len(_risk_events(kubectl, since)) == 1
        out = plugin(devenv, "release", SITE)
        assert "nothing to release" in out.stdout
    finally:
        async for key in client.scan_iter(match=f"ktest:{tag}:*"):
            await client.delete(key)
        async for key in client.scan_iter(match=f"kameng:risk:esc:{SITE}:*"):
            await client.delete(key)
        # The decisions the worker published for this site (the real stream name): the
        # next run's shop of the same name must not start from them.
        await client.delete(f"kameng:decisions:{SITE}")
        await client.aclose()
        await kube.close()
