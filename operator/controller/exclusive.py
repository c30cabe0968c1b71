"""One active operator per cluster: what a starting operator checks before it acts.

Peered operators (the default) are kept apart by kopf: in a ClusterKopfPeering the
earliest started acts and the others pause until it is gone. A standalone operator has
no such arbitration, so it holds the Lease ``kameng-operator`` in its namespace, renewed
every few seconds while it runs, and refuses to start when another operator is active:
a live holder of that Lease, or a live peer in the default peering object. A peered
operator likewise refuses to start next to a live standalone one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from kameng.api.kinds import resource
from kameng.kube.client import Kube, KubeError, path_for

from .config import OperatorConfig

log = logging.getLogger(__name__)
LEASE_NAME = "kameng-operator"
DEFAULT_PEERING = "kameng"
LEASE_SECONDS = 15
RENEW_SECONDS = 5.0
_LEASE = resource("Lease")
_PEERING = resource("ClusterKopfPeering")


class CannotStart(Exception):
    """Why this operator must not start (another one is active, peering is missing);
    the message is meant for the person who started it."""


def identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}/{os.getpid()}"


def _micro(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _refusal(what: str) -> CannotStart:
    return CannotStart(f"another kameng operator is active: {what}; stop it or "
                                 "use peering (--peering NAME on every operator)")


def live_peers(peering: dict[str, Any] | None, now: datetime) -> list[str]:
    """Identities of the peers a ClusterKopfPeering object says are alive."""
    out = []
    for ident, info in ((peering or {}).get("status") or {}).items():
        seen = _parse((info or {}).get("lastseen"))
        lifetime = int((info or {}).get("lifetime") or 0)
        if seen is not None and seen.replace(tzinfo=seen.tzinfo or UTC) + \
                timedelta(seconds=lifetime) > now:
            out.append(ident)
    return out


async def ensure_peering(kube: Kube, name: str) -> None:
    """The peering object kopf keeps its peers in; kopf itself never creates it."""
    body = {"apiVersion": _PEERING.api_version, "kind": _PEERING.kind,
            "metadata": {"name": name}}
    try:
        await kube.create(path_for(_PEERING.api_version, _PEERING.kind), body)
    except KubeError as exc:
        if exc.status == 404:
            raise CannotStart(
                "the ClusterKopfPeering CRD is not installed (kubectl apply -f crds/), "
                "or start the operator with --standalone") from None
        raise


class Lease:
    """The standalone operator's claim to be the active one."""

    def __init__(self, kubeconfig: str | None, namespace: str,
                 seconds: int = LEASE_SECONDS, renew: float = RENEW_SECONDS) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.seconds = seconds
        self.renew = renew
        self.identity = identity()
        self.path = path_for(_LEASE.api_version, _LEASE.kind, LEASE_NAME, namespace)

    def _client(self) -> Kube:
        # Heartbeats are bookkeeping (like kopf's peering keep-alives), not reconcile
        # writes: not counted, so an idle operator still shows zero writes.
        return Kube.from_environment(self.kubeconfig, counted=False)

    def _body(self, now: datetime, current: dict[str, Any] | None) -> dict[str, Any]:
        spec = (current or {}).get("spec") or {}
        taken = spec.get("holderIdentity") != self.identity
        md: dict[str, Any] = {"name": LEASE_NAME, "namespace": self.namespace}
        if current is not None:
            md["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": _LEASE.api_version, "kind": _LEASE.kind, "metadata": md,
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": self.seconds,
                         "acquireTime": _micro(now) if taken else spec.get("acquireTime"),
                         "renewTime": _micro(now),
                         "leaseTransitions": int(spec.get("leaseTransitions") or 0)
                         + (1 if taken and current is not None else 0)}}

    async def _holder_alive(self, kube: Kube, current: dict[str, Any]) -> bool:
        """Whether the other holder still renews: its renewTime must move within a bit
        more than one renewal period (a crashed holder's Lease just looks recent)."""
        spec = current.get("spec") or {}
        renewed = _parse(spec.get("renewTime"))
        if renewed is None or not spec.get("holderIdentity") or \
                renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)) \
                < datetime.now(UTC):
            return False
        deadline = asyncio.get_running_loop().time() + self.renew * 1.5
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            now = await kube.get(self.path, kind=_LEASE.kind)
            if now is None:
                return False
            if (now.get("spec") or {}).get("renewTime") != spec.get("renewTime"):
                return True
        return False

    async def check_free(self) -> None:
        """For a peered operator: raise if a live standalone operator holds the Lease."""
        kube = self._client()
        try:
            current = await kube.get(self.path, kind=_LEASE.kind)
            if current is not None and await self._holder_alive(kube, current):
                raise _refusal(self._describe(current))
        finally:
            await kube.close()

    async def acquire(self, peering: str = DEFAULT_PEERING) -> None:
        """Take the Lease, or raise :class:`CannotStart`."""
        kube = self._client()
        try:
            peers = live_peers(await kube.get(
                path_for(_PEERING.api_version, _PEERING.kind, peering), kind=_PEERING.kind),
                datetime.now(UTC))
            if peers:
                raise _refusal(f"{', '.join(peers)} (ClusterKopfPeering {peering})")
            while True:
                current = await kube.get(self.path, kind=_LEASE.kind)
                holder = ((current or {}).get("spec") or {}).get("holderIdentity")
                if current is not None and holder and holder != self.identity and \
                        await self._holder_alive(kube, current):
                    raise _refusal(self._describe(current))
                body = self._body(datetime.now(UTC), current)
                try:
                    if current is None:
                        await self._create(kube, body)
                    else:
                        await kube.replace(self.path, body)
                    return
                except KubeError as exc:
                    if exc.status != 409:  # 409: someone else moved first: look again
                        raise
        finally:
            await kube.close()

    async def _create(self, kube: Kube, body: dict[str, Any]) -> None:
        path = path_for(_LEASE.api_version, _LEASE.kind, namespace=self.namespace)
        try:
            created = await kube.create(path, body)
        except KubeError as exc:
            if exc.status != 404:
                raise
            await kube.create(path_for("v1", "Namespace"), {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.namespace}})
            created = await kube.create(path, body)
        if created is None:
            raise KubeError(409, "AlreadyExists")

    def _describe(self, lease: dict[str, Any]) -> str:
        spec = lease.get("spec") or {}
        return (f"{spec.get('holderIdentity')} holds Lease {self.namespace}/{LEASE_NAME} "
                f"(renewed {spec.get('renewTime')})")

    async def keep(self) -> None:
        """Renew until cancelled; a lost Lease is logged loudly (the other one wins)."""
        kube = self._client()
        try:
            while True:
                await asyncio.sleep(self.renew)
                try:
                    current = await kube.get(self.path, kind=_LEASE.kind)
                    holder = ((current or {}).get("spec") or {}).get("holderIdentity")
                    if current is not None and holder not in (self.identity, None, ""):
                        log.error("another kameng operator took Lease %s/%s: %s; this one "
                                  "keeps running but they now fight: stop one of them",
                                  self.namespace, LEASE_NAME, holder)
                        continue
                    body = self._body(datetime.now(UTC), current)
                    if current is None:
                        await self._create(kube, body)
                    else:
                        await kube.replace(self.path, body)
                except KubeError as exc:
                    log.warning("Lease %s/%s not renewed: %s", self.namespace, LEASE_NAME, exc)
        finally:
            await kube.close()

    async def release(self) -> None:
        """Give the Lease up at a clean stop, so a successor need not wait for it."""
        kube = self._client()
        try:
            current = await kube.get(self.path, kind=_LEASE.kind)
            if current is not None and \
                    (current.get("spec") or {}).get("holderIdentity") == self.identity:
                body = self._body(datetime.now(UTC), current)
                body["spec"]["holderIdentity"] = ""
                body["spec"]["leaseDurationSeconds"] = 1
                await kube.replace(self.path, body)
        except KubeError as exc:
            log.warning("Lease %s/%s not released: %s", self.namespace, LEASE_NAME, exc)
        finally:
            await kube.close()


async def preflight(cfg: OperatorConfig) -> Lease | None:
    """Before kopf starts: the Lease a standalone operator now holds (None when peered),
    or :class:`CannotStart`."""
    lease = Lease(cfg.kubeconfig, cfg.namespace)
    if cfg.peering is None:
        await lease.acquire(DEFAULT_PEERING)
        return lease
    kube = Kube.from_environment(cfg.kubeconfig, counted=False)
    try:
        await ensure_peering(kube, cfg.peering)
    finally:
        await kube.close()
    await lease.check_free()
    return None
