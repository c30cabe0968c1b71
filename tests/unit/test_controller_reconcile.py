"""The apply order of a site's children, derived once from the builders' output."""

from __future__ import annotations

from kameng.api.kinds import CHILDREN
from kameng.children.build import build_children
from kameng.children.namespace import namespace
from kameng.controller.reconcile import apply_waves

from .test_children_build import ctx


def test_namespace_first_deployment_last_everything_once() -> None:
    children = build_children(ctx())
    waves = apply_waves(children)
    assert [o["kind"] for o in waves[0]] == ["Namespace"]
    assert [o["kind"] for o in waves[-1]] == ["Deployment"]
    flat = [o for w in waves for o in w]
    assert sorted(map(str, flat)) == sorted(map(str, children))


def test_the_namespace_is_built_alone_as_build_children_builds_it() -> None:
    assert namespace(ctx()) == build_children(ctx())[0]


def test_every_child_kind_is_in_the_kinds_registry() -> None:
    assert {o["kind"] for o in build_children(ctx())} == {r.kind for r in CHILDREN}
