"""Kubernetes Events about kameng objects, posted once per transition."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from kameng.api.common import API_VERSION
from kameng.api.resources import SUBSITE

from .client import Kube, KubeError, path_for

log = logging.getLogger(__name__)
COMPONENT = "kameng-operator"
# Events about cluster-scoped objects go to "default", where kubectl describe finds them.
EVENT_NAMESPACE = "default"


async def post(kube: Kube, obj: dict[str, Any], type_: str, reason: str,
               message: str) -> None:
    md = obj.get("metadata", {})
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{md.get('name')}.{uuid.uuid4().hex[:12]}",
                     "namespace": EVENT_NAMESPACE},
        "involvedObject": {"apiVersion": obj.get("apiVersion", API_VERSION),
                           "kind": obj.get("kind", SUBSITE.kind), "name": md.get("name"),
                           "uid": md.get("uid")},
        "type": type_,
        "reason": reason[:128],
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("POD_NAME", socket.gethostname())[:128],
        "firstTimestamp": now[:19] + "Z",
        "lastTimestamp": now[:19] + "Z",
        "eventTime": now,
        "action": "Reconcile",
        "count": 1,
    }
    try:
        await kube.create(path_for("v1", "Event", namespace=EVENT_NAMESPACE), body)
    except KubeError as exc:  # an Event is best effort; never fail a reconcile for it
        log.warning("could not post event %s: %s", reason, exc)
