"""LoadBalancer Service status (issue 9): the leader writes our address into the Services we serve.

With `--serve-load-balancer-services`, pyngress is the load balancer implementation for Services of
`type: LoadBalancer` (as MetalLB or k3s's klipper-lb are): `kubectl get service` shows an EXTERNAL-IP only
once something writes `status.loadBalancer.ingress`. The leader writes there the controller's address (the
one Ingress status gets: `--publish-service` or `--publish-status-address`), with the Service ports actually
listening on this replica (`config.streams.load_balancer_status`; a port that could not be bound is left
out, and a Service with none bound gets an empty `loadBalancer`).

A Service that stops being served (deleted from the LoadBalancer type, flag off, its listener gone) has its
`loadBalancer` cleared when its status still names one of our addresses: that survives restarts without
remembering what we wrote. The `--publish-service` itself is never written: its address comes from the cloud
and is the source of ours. Writes are skipped when the cached status already says the same (entries compared
as sets of ip/hostname with their ports), read the Service fresh, and retry a 409 Conflict a few times.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

from pyngress.config.streams import load_balancer_status
from pyngress.model import Service
from pyngress.sources.kubernetes.addresses import LoadBalancerIngress
from pyngress.sources.kubernetes.client import ApiError, KubeClient
from pyngress.sources.kubernetes.resources import SERVICE
from pyngress.sources.kubernetes.source import KubernetesSource

CONFLICT_RETRIES = 5
Canonical = tuple[tuple[str, str, tuple[tuple[int, str], ...]], ...]


def canonical(load_balancer: Any) -> Canonical:
    """A `status.loadBalancer` as a comparable value: (ip, hostname, ports) per entry, sorted; other fields
    (ipMode, a port's error) are the API server's or the cloud's and do not make a write necessary."""
    entries = (load_balancer.get("ingress") or []) if isinstance(load_balancer, dict) else []
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        ports = tuple(sorted((int(p.get("port", 0)), str(p.get("protocol", "TCP")))
                             for p in e.get("ports") or [] if isinstance(p, dict)))
        out.append((str(e.get("ip", "")), str(e.get("hostname", "")), ports))
    return tuple(sorted(out))


class ServiceStatus:
    """Called by the `StatusPublisher` while this replica leads (`sync`), and on the last replica's shutdown
    (`clear`)."""

    def __init__(self, client: KubeClient, source: KubernetesSource, bound: Callable[[], Collection[str]], *,
                 exclude: str = "", log: logging.Logger | None = None) -> None:
        self.client = client
        self.source = source
        self.bound = bound  # listen keys listening now (StreamRuntime.listeners)
        self.exclude = exclude  # "namespace/name" of --publish-service
        self.log = log or logging.getLogger(__name__)
        self.writes = 0
        self.conflicts = 0

    async def sync(self, desired: Sequence[LoadBalancerIngress]) -> None:
        snapshot = self.source.current
        if snapshot is None:
            return
        addresses = [e.get("ip") or e.get("hostname") or "" for e in desired]
        wanted = load_balancer_status(snapshot.streams, addresses, self.bound())
        for key in self._ours(addresses):
            wanted.setdefault(key, {"loadBalancer": {}})  # no longer served: clear our address
        await self._apply(wanted)

    async def clear(self, desired: Sequence[LoadBalancerIngress]) -> None:
        """Remove our address from every Service that shows it (shutdown of the last replica)."""
        addresses = [e.get("ip") or e.get("hostname") or "" for e in desired]
        await self._apply({key: {"loadBalancer": {}} for key in self._ours(addresses)})

    def _ours(self, addresses: Sequence[str]) -> list[str]:
        """The Services whose status names one of `addresses`."""
        found = []
        for key, entry in self.source.stores["Service"].entries.items():
            shown = canonical((entry.status or {}).get("loadBalancer"))
            if isinstance(entry.obj, Service) and any(ip in addresses or host in addresses
                                                      for ip, host, _ in shown if ip or host):
                found.append(key)
        return found

    async def _apply(self, wanted: dict[str, dict[str, Any]]) -> None:
        entries = self.source.stores["Service"].entries
        for key, status in sorted(wanted.items()):
            entry = entries.get(key)
            if key == self.exclude or entry is None:
                continue
            if canonical((entry.status or {}).get("loadBalancer")) == canonical(status["loadBalancer"]):
                continue
            namespace, _, name = key.partition("/")
            with contextlib.suppress(ApiError):
                await self._write(namespace, name, status["loadBalancer"])

    async def _write(self, namespace: str, name: str, load_balancer: dict[str, Any]) -> None:
        for _ in range(CONFLICT_RETRIES):
            obj = await self.client.request("GET", SERVICE.object_path(namespace, name))
            status = obj.get("status") or {}
            if canonical(status.get("loadBalancer")) == canonical(load_balancer):
                return
            obj["status"] = {**status, "loadBalancer": load_balancer}
            try:
                await self.client.request("PUT", SERVICE.object_path(namespace, name, "status"), body=obj)
            except ApiError as exc:
                if exc.status != 409:
                    self.log.warning("status of Service %s/%s: %s", namespace, name, exc)
                    raise
                self.conflicts += 1
                continue
            self.writes += 1
            self.log.info("status of Service %s/%s: %s", namespace, name, load_balancer or "cleared")
            return
