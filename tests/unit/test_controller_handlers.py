"""One handler with a stand-in runtime: wake-ups go to exactly the affected sites."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from kameng.controller import handlers, runtime
from kameng.controller.state import ChildCache, Triggers


@pytest.fixture
def fake_runtime(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    rt = SimpleNamespace(triggers=Triggers(), cache=ChildCache(), seen_generation={})
    monkeypatch.setattr(runtime, "RUNTIME", rt)
    return rt


async def test_rolepolicy_change_wakes_only_its_subsites(fake_runtime: SimpleNamespace) -> None:
    flags = {s: fake_runtime.triggers.register(s) for s in ("a", "b", "c")}
    index = {"standard": ["a", "b"], "vip": ["c"]}
    await handlers.rolepolicy_event(name="standard", event={"type": "MODIFIED"},
                                    body={"metadata": {"name": "standard"}},
                                    subsites_by_rolepolicy=index)
    assert {s for s, f in flags.items() if f.is_set()} == {"a", "b"}


async def test_child_event_updates_cache_and_wakes_its_site(
        fake_runtime: SimpleNamespace) -> None:
    flag = fake_runtime.triggers.register("demo")
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "storefront-config", "namespace": "kameng-demo",
                         "resourceVersion": "5", "managedFields": [{"x": 1}],
                         "labels": {"kameng.io/subsite": "demo"}}}
    handlers._child_event(event={"type": "MODIFIED"}, body=body,
                          labels=body["metadata"]["labels"])
    cached = fake_runtime.cache.get(("ConfigMap", "kameng-demo", "storefront-config"))
    assert cached is not None
    assert "managedFields" not in cached["metadata"]
    assert flag.is_set()
    flag.clear()
    handlers._child_event(event={"type": "DELETED"}, body=body,
                          labels=body["metadata"]["labels"])
    assert fake_runtime.cache.get(("ConfigMap", "kameng-demo", "storefront-config")) is None
    assert flag.is_set()
    await asyncio.sleep(0)


async def test_status_only_subsite_events_do_not_wake(fake_runtime: SimpleNamespace) -> None:
    flag = fake_runtime.triggers.register("demo")
    fake_runtime.seen_generation["demo"] = 3
    await handlers.subsite_event(name="demo", meta={"generation": 3},
                                 subsites_by_rolepolicy={})
    assert not flag.is_set()
    await handlers.subsite_event(name="demo", meta={"generation": 4},
                                 subsites_by_rolepolicy={})
    assert flag.is_set()
