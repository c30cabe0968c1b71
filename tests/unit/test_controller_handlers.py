"""One handler with a stand-in runtime: wake-ups go to exactly the affected sites."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import kopf
import pytest

from kameng.api.holds import Hold
from kameng.controller import children_watch, handlers
from kameng.controller.runtime import SiteState, Triggers
from kameng.kube.cache import ChildCache


@pytest.fixture
def fake_runtime() -> SimpleNamespace:
    return SimpleNamespace(triggers=Triggers(), cache=ChildCache(), sites={},
                           domain_waiting=set(), agreements_seen={})


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


def _woken(flags: dict[str, asyncio.Event]) -> set[str]:
    out = {s for s, f in flags.items() if f.is_set()}
    for f in flags.values():
        f.clear()
    return out


async def test_rolepolicy_status_writes_wake_no_site(fake_runtime: SimpleNamespace,
                                                    memo: kopf.Memo) -> None:
    """Its usage count is written to its status; the echo must not wake its 1,000 sites."""
    flags = {s: fake_runtime.triggers.register(s) for s in ("a", "b")}
    index = {"standard": ["a", "b"]}

    async def event(kind: str, generation: int, used_by: int) -> set[str]:
        await handlers.rolepolicy_event(
            name="standard", event={"type": kind}, subsites_by_rolepolicy=index, memo=memo,
            body={"metadata": {"name": "standard", "generation": generation},
                  "spec": {"roles": []}, "status": {"usedBy": used_by}})
        return _woken(flags)

    assert await event("ADDED", 1, 0) == {"a", "b"}
    assert await event("MODIFIED", 1, 2) == set()
    assert await event("MODIFIED", 2, 2) == {"a", "b"}
    assert await event("DELETED", 2, 2) == {"a", "b"}
    assert await event("ADDED", 2, 0) == {"a", "b"}  # the same name again: a new object


async def test_license_wakes_its_sites_only_when_what_they_read_changes(
        fake_runtime: SimpleNamespace, memo: kopf.Memo) -> None:
    flags = {s: fake_runtime.triggers.register(s) for s in ("a", "b")}
    index = {"lic-a": ["a"], "lic-b": ["b"]}
    spec = {"subSite": "a", "plan": "basic",
            "term": {"start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"}}

    async def event(kind: str, generation: int, status: dict, annotations: dict | None = None
                    ) -> set[str]:
        await handlers.license_event(
            name="lic-a", event={"type": kind}, subsites_by_license=index, memo=memo,
            body={"metadata": {"name": "lic-a", "generation": generation,
                               "annotations": annotations or {}},
                  "spec": spec, "status": status})
        return _woken(flags)

    assert await event("ADDED", 1, {}) == {"a"}
    # The operator's own status writes: the midnight "time left" step, a notice sent.
    assert await event("MODIFIED", 1, {"state": "Active", "expiresIn": "3317d"}) == set()
    assert await event("MODIFIED", 1, {"state": "Active", "expiresIn": "3316d"}) == set()
    # A renewal (spec, new generation), a hold (an annotation, same generation), its
    # release, and the deletion all change what the site reads.
    assert await event("MODIFIED", 2, {"expiresIn": "3316d"}) == {"a"}
    hold = {Hold("risk", "fraud rate", "2026-12-01T00:00:00Z", "risk-worker").annotation:
            Hold("risk", "fraud rate", "2026-12-01T00:00:00Z", "risk-worker").to_value()}
    assert await event("MODIFIED", 2, {}, hold) == {"a"}
    assert await event("MODIFIED", 2, {"state": "Suspended"}, hold) == set()
    assert await event("MODIFIED", 2, {}) == {"a"}
    assert await event("DELETED", 2, {}) == {"a"}


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


async def test_wakes_are_counted_by_the_cause_a_person_can_name(
        fake_runtime: SimpleNamespace, memo: kopf.Memo) -> None:
    """``kameng_wakes_total{cause}`` says why sites reconcile; a poke for a site without a
    loop wakes nothing and counts nothing."""
    from kameng.controller import metrics

    def count(cause: str) -> float:
        return metrics.WAKES.labels(cause=cause)._value.get()

    fake_runtime.triggers.register("a")
    before = {c: count(c) for c in ("license", "rolepolicy", "child")}
    await handlers.license_event(
        name="lic-a", event={"type": "ADDED"}, subsites_by_license={"lic-a": ["a", "gone"]},
        memo=memo, body={"metadata": {"name": "lic-a", "generation": 1}, "spec": {}})
    await handlers.rolepolicy_event(
        name="rp", event={"type": "ADDED"}, subsites_by_rolepolicy={"rp": ["a"]}, memo=memo,
        body={"metadata": {"name": "rp", "generation": 1}, "spec": {}})
    children_watch.child_seen(fake_runtime, "MODIFIED", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "c", "namespace": "n", "labels": {"kameng.io/subsite": "a"}}})
    assert {c: count(c) - n for c, n in before.items()} == {
        "license": 1, "rolepolicy": 1, "child": 1}
