"""kopf's own settings: bookkeeping under kameng.io so GitOps tools see no foreign
drift, and peering so that two operators never act at once."""

from __future__ import annotations

import logging
import time

import kopf

from kameng.api.kinds import ANNOTATION_PREFIX, FINALIZER

from .config import OperatorConfig


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled configuration", never written.

    The operator's only change-detecting handler is the reclaim, which kopf triggers by
    ``deletionTimestamp``, never by a diff (changes wake the level-based reconcile loop
    instead). Kopf's annotation diff base cost one SubSite PATCH per new site (one write
    in thirteen of a batch's) and put a copy of the spec into an annotation Git does not
    have. Reporting the object as unchanged since last seen makes every non-deletion
    cause a no-op for kopf."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    # Progress and the last-handled state live in kameng.io annotations: never in
    # status.kopf (pruned by our structural schema anyway) nor kopf.zalando.org.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only problems become Kubernetes Events automatically; transitions are posted by
    # the reconciler itself, once each.
    settings.posting.level = logging.WARNING
    if cfg.peering is None:
        settings.peering.standalone = True
        settings.peering.mandatory = False
    else:
        settings.peering.standalone = False
        settings.peering.mandatory = True
        settings.peering.clusterwide = True
        settings.peering.name = cfg.peering
        settings.peering.lifetime = cfg.peering_lifetime
        # kopf pauses every operator that sees a live peer of higher OR EQUAL priority,
        # so equal priorities would pause them all. The earliest started wins instead:
        # a newcomer pauses until the active one is gone, then takes over.
        settings.peering.priority = 10**13 - int(time.time() * 1000)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    settings.networking.request_timeout = 60
