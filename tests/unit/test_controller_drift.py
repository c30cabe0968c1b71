from __future__ import annotations

import copy

from kameng.api.kinds import APPLIED_HASH_ANNOTATION
from kameng.kube.drift import first_difference, is_subset, needs_apply, with_hash

CM = {"apiVersion": "v1", "kind": "ConfigMap",
      "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}},
      "data": {"k": "v"}}


def live_of(desired: dict) -> dict:
    """What the server returns: our fields plus its own."""
    live = copy.deepcopy(desired)
    live["metadata"].update({"uid": "x", "resourceVersion": "7", "managedFields": []})
    live["metadata"]["labels"]["other"] = "added-by-someone"
    return live


def test_unchanged_child_needs_no_apply() -> None:
    d = with_hash(CM)
    assert not needs_apply(d, live_of(d))


def test_missing_child_is_applied() -> None:
    assert needs_apply(with_hash(CM), None)


def test_edited_managed_field_is_drift() -> None:
    d = with_hash(CM)
    live = live_of(d)
    live["data"]["k"] = "edited"
    assert needs_apply(d, live)


def test_removed_field_changes_the_hash() -> None:
    # Dropping a label from the desired state is invisible to a subset check; the
    # hash annotation catches it.
    old = with_hash(CM)
    smaller = copy.deepcopy(CM)
    del smaller["metadata"]["labels"]["a"]
    new = with_hash(smaller)
    assert new["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] != \
        old["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    assert needs_apply(new, live_of(old))


def test_server_normalised_quantities_are_equal() -> None:
    desired = {"spec": {"hard": {"requests.cpu": "0.5", "pods": "10"}}}
    assert is_subset(desired, {"spec": {"hard": {"requests.cpu": "500m", "pods": "10"}}})
    assert not is_subset(desired, {"spec": {"hard": {"requests.cpu": "1", "pods": "10"}}})
    # Outside resource maps, strings are compared literally.
    assert not is_subset({"data": {"x": "0.5"}}, {"data": {"x": "500m"}})


def test_lists_must_match_in_length() -> None:
    assert not is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"x": 2}]})
    assert is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1, "default": True}]})


def test_object_being_deleted_is_left_alone() -> None:
    d = with_hash(CM)
    live = live_of(d)
    live["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    live["data"]["k"] = "other"
    assert not needs_apply(d, live)


def test_empty_values_the_server_omits_are_not_drift() -> None:
    """The API server drops empty strings, lists and maps (omitempty): an env var with
    ``value: ""`` comes back without ``value``. Seen as drift, every reconcile applied
    the Deployment again (2-4 applies per site until Ready in the scale test)."""
    desired = with_hash({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": "s", "namespace": "n"},
                         "spec": {"template": {"spec": {"containers": [{
                             "name": "c", "env": [{"name": "A", "value": ""},
                                                  {"name": "B", "value": "1"}],
                             "args": []}]}}}})
    live = copy.deepcopy(desired)
    container = live["spec"]["template"]["spec"]["containers"][0]
    del container["env"][0]["value"]
    del container["args"]
    assert not needs_apply(desired, live)
    container["env"][1]["value"] = "2"  # a real edit still is drift
    assert needs_apply(desired, live)
    assert first_difference(desired, live) == \
        ".spec.template.spec.containers[0].env[1].value"
