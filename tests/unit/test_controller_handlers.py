"""One handler with a stand-in runtime: wake-ups go to exactly the affected sites."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import kopf
import pytest

from kameng.controller import children_watch, handlers
from kameng.controller.runtime import SiteState, Triggers
from kameng.kube.cache import ChildCache


@pytest.fixture
def fake_runtime() -> SimpleNamespace:
    return SimpleNamespace(triggers=Triggers(), cache=ChildCache(), sites={},
                           domain_waiting=set())


@pytest.fixture
def memo(fake_runtime: SimpleNamespace) -> kopf.Memo:
    return kopf.Memo(runtime=fake_runtime)


async def test_rolepolicy_change_wakes_only_its_subsites(fake_runtime: SimpleNamespace,
                                                        memo: kopf.Memo) -> None:
    flags = {s: fake_runtime.triggers.register(s) for s in ("a", "b", "c")}
    index = {"standard": ["a", "b"], "vip": ["c"]}
    await handlers.rolepolicy_event(name="standard", event={"type": "MODIFIED"},
                                    body={"metadata": {"name": "standard"}},
                                    subsites_by_rolepolicy=index, memo=memo)
    assert {s for s, f in flags.items() if f.is_set()} == {"a", "b"}


async def test_child_event_updates_cache_and_wakes_its_site(
        fake_runtime: SimpleNamespace, memo: kopf.Memo) -> None:
    flag = fake_runtime.triggers.register("demo")
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "storefront-config", "namespace": "kameng-demo",
                         "resourceVersion": "5", "managedFields": [{"x": 1}],
                         "labels": {"kameng.io/subsite": "demo"}}}
    children_watch.child_seen(fake_runtime, None, body)  # the listing wakes nobody
    assert not flag.is_set()
    children_watch.child_seen(fake_runtime, "MODIFIED", body)
    cached = fake_runtime.cache.get(("ConfigMap", "kameng-demo", "storefront-config"))
    assert cached is not None
    assert "managedFields" not in cached["metadata"]
    assert flag.is_set()
    flag.clear()
    children_watch.child_seen(fake_runtime, "DELETED", body)
    assert fake_runtime.cache.get(("ConfigMap", "kameng-demo", "storefront-config")) is None
    assert flag.is_set()
    await asyncio.sleep(0)


async def test_status_only_subsite_events_do_not_wake(fake_runtime: SimpleNamespace,
                                                     memo: kopf.Memo) -> None:
    flag = fake_runtime.triggers.register("demo")
    fake_runtime.sites["demo"] = SiteState(seen_generation=3)
    await handlers.subsite_event(name="demo", meta={"generation": 3},
                                 subsites_by_rolepolicy={}, memo=memo)
    assert not flag.is_set()
    await handlers.subsite_event(name="demo", meta={"generation": 4},
                                 subsites_by_rolepolicy={}, memo=memo)
    assert flag.is_set()
    flag.clear()
    # A rotation request changes only an annotation, and still wakes the loop.
    fake_runtime.sites["demo"].seen_generation = 4
    await handlers.subsite_event(
        name="demo", meta={"generation": 4,
                           "annotations": {"kameng.io/rotate-credentials": "r1"}},
        subsites_by_rolepolicy={}, memo=memo)
    assert flag.is_set()
