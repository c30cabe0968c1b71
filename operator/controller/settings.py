"""kopf settings: bookkeeping under kameng.io so GitOps tools see no foreign drift."""

from __future__ import annotations

import logging

import kopf

PREFIX = "kameng.io"
FINALIZER = "kameng.io/reclaim"


def configure(settings: kopf.OperatorSettings) -> None:
    # Progress and the last-handled state live in kameng.io annotations: never in
    # status.kopf (pruned by our structural schema anyway) nor kopf.zalando.org.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    # Only problems become Kubernetes Events automatically; transitions are posted by
    # the reconciler itself, once each.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    settings.peering.mandatory = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    settings.networking.request_timeout = 60
