"""HQ has ONE Kubernetes client setting and ONE client instance (issue 12, gap 2).

Onboarding, approvals, renewals and plan promotion used to read three settings
(``KUBECONFIG``, ``KAMENG_HQ_RENEWALS_KUBECONFIG``, ``KAMENG_HQ_KUBECONFIG``) and to hold
up to three clients; a fix to one (a rotated kubeconfig, a closed client) missed the others.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from kameng.contracts import pod
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.config import HQ_KUBECONFIG_ENV, Settings, load_settings
from kameng_storefront.crypto import DataCipher
from kameng_storefront.hq import onboarding, plans
from kameng_storefront.state import AppState, KubeUnavailable


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {pod.SITE_CONFIG_ENV: SiteConfig(site="hq").to_json(),
            pod.SECRETS_ROOT_ENV: str(tmp_path), pod.DB_DSN.env: "x", pod.REDIS_URL.env: "x",
            pod.SESSION_SECRET.env: "x", pod.DATA_KEYS.env: "x",
            pod.HQ_MASTER_SECRET.env: "x", **extra}


def _kubeconfig(path: Path) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


def _state(settings: Settings) -> AppState:
    return AppState(settings=settings, cipher=DataCipher(
        "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))


def test_one_setting_names_hqs_kubeconfig(tmp_path):
    names = {f.name for f in Settings.__dataclass_fields__.values()}
    assert "kubeconfig" in names
    assert not names & {"hq_kubeconfig", "renewals_kubeconfig"}, "one setting, not three"
    s = load_settings("hq", _env(tmp_path, **{HQ_KUBECONFIG_ENV: "/k/hq.yaml"}))
    assert s.kubeconfig == "/k/hq.yaml"
    # A developer's own KUBECONFIG is not HQ's identity; the old per-capability name is gone.
    s = load_settings("hq", _env(tmp_path, KUBECONFIG="/home/dev/.kube/config",
                                 KAMENG_HQ_RENEWALS_KUBECONFIG="/k/r.yaml"))
    assert s.kubeconfig is None
    # A shop never talks to the Kubernetes API.
    env = _env(tmp_path, **{HQ_KUBECONFIG_ENV: "/k/hq.yaml", pod.HQ_API_TOKEN.env: "x"})
    assert load_settings("subsite", env).kubeconfig is None


def test_every_capability_shares_one_lazily_made_client(tmp_path, monkeypatch):
    cfg = _kubeconfig(tmp_path / "hq.kubeconfig")
    state = _state(load_settings("hq", _env(tmp_path, **{HQ_KUBECONFIG_ENV: cfg})))
    assert state.kube is None  # lazily: nothing is opened before the first use
    kube = state.kube_client()
    assert onboarding.kube_of(state) is kube  # onboarding and approvals
    assert plans.kube_of(state) is kube  # plan promotion
    assert state.kube_client() is kube  # renewals call it directly
    asyncio.run(kube.close())


def test_without_serviceaccount_or_setting_hq_has_no_api(tmp_path, monkeypatch):
    # Even with a usable KUBECONFIG in the environment: HQ never borrows it.
    monkeypatch.setenv("KUBECONFIG", _kubeconfig(tmp_path / "dev.kubeconfig"))
    monkeypatch.setattr("kameng.kube.client.SA_DIR", tmp_path / "no-sa")
    state = _state(load_settings("hq", _env(tmp_path)))
    with pytest.raises(KubeUnavailable):
        state.kube_client()
    assert onboarding.kube_of(state) is None
    with pytest.raises(plans.PlansUnavailable):
        plans.kube_of(state)
    assert state.kube is None
