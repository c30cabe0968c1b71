"""The reconcile's small guards: a SubSite being deleted is never reconciled, and the
probe for a site's Secret names exactly that Secret."""

from __future__ import annotations

from types import SimpleNamespace

from kameng.controller.reconcile import _secret_probe, being_deleted


def _rt(*reclaimed: str) -> SimpleNamespace:
    return SimpleNamespace(reclaimed=set(reclaimed))


def test_a_deletion_timestamp_or_a_reclaimed_uid_means_being_deleted():
    live = {"metadata": {"name": "demo", "uid": "u1"}}
    assert being_deleted(_rt(), live) is False
    assert being_deleted(_rt("u2"), live) is False
    assert being_deleted(_rt("u1"), live) is True
    gone = {"metadata": {"name": "demo", "uid": "u1",
                         "deletionTimestamp": "2026-12-01T00:00:00Z"}}
    assert being_deleted(_rt(), gone) is True
    assert being_deleted(_rt(), {"metadata": {"name": "d", "uid": "u",
                                              "deletionTimestamp": ""}}) is False


def test_secret_probe_names_the_secret_in_the_sites_namespace():
    assert _secret_probe("storefront-db", "kameng-demo") == {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "storefront-db", "namespace": "kameng-demo"}}
