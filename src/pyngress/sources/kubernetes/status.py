"""Status publishing: the leader writes our address into `status.loadBalancer.ingress` of the Ingresses we serve.

The publisher wakes when the source reports any change (status-only ones included: the cloud assigning the
published Service its address is one), when leadership changes, and every `resync` seconds. It compares each
served Ingress's cached status with the desired one (`addresses`) and writes only where they differ: on a
steady cluster it sends nothing at all. A write is a read-modify-write of the `/status` subresource carrying
the resourceVersion it read; a 409 Conflict (someone changed the Ingress in between) is retried with the
fresh object, a few times, and the next wake-up catches whatever is still different.

With `--serve-load-balancer-services` the same rounds also write the LoadBalancer Services' status
(`service_status`). On shutdown (`shutdown`, `--update-status-on-shutdown`), the leader of the last controller
Pod removes the address again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pyngress.config.selection import served_ingresses
from pyngress.model import Ingress, IngressClass
from pyngress.sources.kubernetes.addresses import LoadBalancerIngress, needs_write, service_status, static_status
from pyngress.sources.kubernetes.client import ApiError, KubeClient
from pyngress.sources.kubernetes.election import LeaderElector
from pyngress.sources.kubernetes.resources import INGRESS, SERVICE
from pyngress.sources.kubernetes.service_status import ServiceStatus
from pyngress.sources.kubernetes.source import KubernetesSource

CONFLICT_RETRIES = 5


@dataclass(slots=True)
class StatusCounters:
    writes: int = 0
    conflicts: int = 0
    skipped: int = 0


class StatusPublisher:
    def __init__(self, client: KubeClient, source: KubernetesSource, elector: LeaderElector | None, *,
                 publish_service: str = "", addresses: Sequence[str] = (), resync: float = 60.0,
                 services: ServiceStatus | None = None, log: logging.Logger | None = None) -> None:
        self.client = client
        self.source = source
        self.elector = elector
        self.publish_service = publish_service
        self.addresses = tuple(addresses)
        self.resync = resync
        self.log = log or logging.getLogger(__name__)
        self.counters = StatusCounters()
        self.services = services  # issue 9: status of the LoadBalancer Services served, when serving them

    async def run(self) -> None:
        await self.source.synced.wait()
        while True:
            self.source.updated.clear()  # before reading: a change during sync() wakes the next round
            if self.elector is not None:
                self.elector.changed.clear()
            if self.elector is None or self.elector.is_leader:
                await self.sync()
            await self._wake()

    async def _wake(self) -> None:
        waits = [asyncio.ensure_future(self.source.updated.wait())]
        if self.elector is not None:
            waits.append(asyncio.ensure_future(self.elector.changed.wait()))
        try:
            await asyncio.wait(waits, timeout=self.resync, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def desired(self) -> list[LoadBalancerIngress]:
        if self.addresses:
            return static_status(self.addresses)
        if not self.publish_service:
            return []
        namespace, _, name = self.publish_service.rpartition("/")
        namespace = namespace or "default"
        entry = self.source.stores["Service"].entries.get(f"{namespace}/{name}")
        if entry is not None:
            return service_status(entry.status)
        if self.source.namespace in ("", namespace):
            return []  # we watch its namespace: it does not exist (yet)
        try:  # --namespace leaves our own Service's namespace unwatched: read it
            return service_status((await self.client.request("GET", SERVICE.object_path(namespace, name)))
                                  .get("status"))
        except ApiError:
            return []

    async def sync(self) -> None:
        desired = await self.desired()
        if not desired:
            return
        await self._sync_ingresses(desired)
        if self.services is not None:  # issue 9: LoadBalancer Services served
            await self.services.sync(desired)

    async def shutdown(self, last_replica: Callable[[], Awaitable[bool]]) -> None:
        """`--update-status-on-shutdown` (ingress-nginx's rule): when the leader stops and no other controller
        Pod runs, remove our address from the Ingresses (and Services) it shows on; otherwise the next leader
        keeps it up to date."""
        if self.elector is not None and not self.elector.is_leader:
            return
        desired = await self.desired()
        if not desired:
            return
        if not await last_replica():
            self.log.info("other controller Pods run: leaving the status to the next leader")
            return
        self.log.info("last controller Pod stopping: removing %s from the status", desired)
        await self._sync_ingresses([])
        if self.services is not None:
            await self.services.clear(desired)

    async def _sync_ingresses(self, desired: list[LoadBalancerIngress]) -> None:
        stores = self.source.stores
        ingresses = [o for o in stores["Ingress"].objects() if isinstance(o, Ingress)]
        classes = {o.meta.name: o for o in stores["IngressClass"].objects() if isinstance(o, IngressClass)}
        for ingress in served_ingresses(ingresses, classes, self.source.options):
            entry = stores["Ingress"].entries.get(ingress.meta.key)
            if entry is None or not needs_write(entry.status, desired):
                self.counters.skipped += 1
                continue
            with contextlib.suppress(ApiError):
                await self._write(ingress.meta.namespace, ingress.meta.name, desired)

    async def _write(self, namespace: str, name: str, desired: list[LoadBalancerIngress]) -> None:
        for _ in range(CONFLICT_RETRIES):
            obj = await self.client.request("GET", INGRESS.object_path(namespace, name))
            if not needs_write(obj.get("status"), desired):
                return
            obj["status"] = {**(obj.get("status") or {}), "loadBalancer": {"ingress": desired}}
            try:
                await self.client.request("PUT", INGRESS.object_path(namespace, name, "status"), body=obj)
            except ApiError as exc:
                if exc.status != 409:
                    self.log.warning("status of Ingress %s/%s: %s", namespace, name, exc)
                    raise
                self.counters.conflicts += 1
                continue
            self.counters.writes += 1
            self.log.info("status of Ingress %s/%s: %s", namespace, name, desired)
            return
