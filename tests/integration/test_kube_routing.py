"""Cluster mode end to end: kubectl changes every watched kind on the test API server, the proxy follows.

After each step the proxy's Snapshot must equal a from-scratch compile of what `kubectl get` says the cluster
holds (routing parity with file mode), and requests through the proxy must reach the expected pod. Each
change must land within the 1 s budget: the test measures the time from kubectl returning (the API server has
stored the change) to the proxy installing the Snapshot that reflects it. It runs on asyncio and on uvloop
(what `pyngress run` uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import trustme
from harness import EchoBackend, async_test
from kube_support import (
    Cluster,
    Running,
    endpoint_slice,
    fake_cluster,
    ingress,
    ingress_class,
    needs_kubectl,
    service,
    source_and_proxy,
    tls_secret,
    with_tls,
)

from pyngress.config import CompileOptions, compile_snapshot, parse_manifest
from pyngress.model import Snapshot

BUDGET = 1.0
KINDS = "ingresses,ingressclasses,services,endpointslices,secrets,configmaps"


async def _cluster_snapshot(cluster: Cluster) -> Snapshot:
    """What file mode would serve for the cluster's objects, as kubectl reads them."""
    listed = json.loads(await cluster.kubectl("get", KINDS, "-A", "-o", "json"))
    objects = [o for o in (parse_manifest(item)[0] for item in listed["items"]) if o is not None]
    return compile_snapshot(objects, CompileOptions())


async def _pod_of(proxy: Any, host: str) -> str:
    response = await proxy.get("/", host=host)
    return str(response.json()["pod"]) if response.status == 200 else str(response.status)


@dataclass
class Steps:
    cluster: Cluster
    running: Running
    proxy: Any
    latencies: list[float] = field(default_factory=list)

    async def apply(self, *objects: dict[str, Any], expect: dict[str, set[str]]) -> None:
        await self._step(self.cluster.kubectl.apply(*objects), expect)

    async def kubectl(self, *args: str, expect: dict[str, set[str]]) -> None:
        await self._step(self.cluster.kubectl(*args), expect)

    async def _step(self, command: Any, expect: dict[str, set[str]]) -> None:
        await command
        loop = asyncio.get_running_loop()
        done = loop.time()
        swaps = len(self.running.applied_at)
        await self._settles(expect)
        applied = self.running.applied_at[swaps:]
        self.latencies.append(applied[-1] - done if applied else 0.0)  # 0: nothing needed swapping

    async def _settles(self, expect: dict[str, set[str]]) -> None:
        """Wait (bounded) until the proxy serves a compile of what kubectl reads from the cluster (parity) and
        each host answers from the expected pods (or with the expected status)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        expected = await _cluster_snapshot(self.cluster)  # the cluster does not change while we wait
        seen: dict[str, set[str]] = {}

        def same() -> bool:
            current = self.running.source.current
            return current is not None and dataclasses.replace(expected, version=current.version) == current

        async def answers() -> bool:
            for host, wanted in expect.items():
                seen[host] = {await _pod_of(self.proxy, host) for _ in range(2 * len(wanted))}
                if seen[host] != wanted:
                    return False
            return True

        while not (same() and await answers()):
            assert loop.time() < deadline, f"expected {expect}, got {seen}; parity: {same()}"
            await asyncio.sleep(0.01)


@needs_kubectl
@async_test
async def test_proxy_follows_kubectl_changes_of_every_kind() -> None:
    async with contextlib.AsyncExitStack() as exits:
        pods = [await EchoBackend.start(f"pod-{c}") for c in "abc"]
        for p in pods:
            exits.push_async_callback(p.close)
        a, b, c = pods
        cluster = await exits.enter_async_context(fake_cluster())
        await cluster.kubectl.apply(ingress_class(), service("web"), endpoint_slice("web-a", "web", [a]),
                                    ingress("web", "a.example.com", "web"))
        running, proxy = await exits.enter_async_context(source_and_proxy(cluster.client))
        await asyncio.wait_for(running.source.synced.wait(), 5)
        s = Steps(cluster, running, proxy)
        await s._settles({"a.example.com": {"pod-a"}})

        await s.apply(endpoint_slice("web-b", "web", [b]), expect={"a.example.com": {"pod-a", "pod-b"}})
        assert running.source.counters.fast >= 1  # EndpointSlice create: fast path
        await s.apply(endpoint_slice("web-a", "web", [a], ready=False), expect={"a.example.com": {"pod-b"}})
        await s.kubectl("delete", "endpointslice", "web-b", expect={"a.example.com": {"503"}})
        await s.apply(endpoint_slice("web-a", "web", [a]), expect={"a.example.com": {"pod-a"}})

        # Ingress update: the host moves
        await s.apply(ingress("web", "b.example.com", "web"),
                      expect={"a.example.com": {"404"}, "b.example.com": {"pod-a"}})
        await s.apply(service("api"), endpoint_slice("api-c", "api", [c]), ingress("api", "c.example.com", "api"),
                      expect={"c.example.com": {"pod-c"}, "b.example.com": {"pod-a"}})
        # Service update: the Ingress's port name is gone; then Service and Ingress deletes
        await s.apply(service("api", port_name="grpc"), expect={"c.example.com": {"503"}})
        await s.kubectl("delete", "service", "api", expect={"c.example.com": {"503"}})
        await s.kubectl("delete", "ingress", "api", expect={"c.example.com": {"404"}})

        # a class change moves an Ingress out and back in
        await s.apply(ingress("web", "b.example.com", "web", cls="other"), expect={"b.example.com": {"404"}})
        await s.apply(ingress("web", "b.example.com", "web"), expect={"b.example.com": {"pod-a"}})
        # IngressClass update (another controller's now), delete (the name alone matches again), create
        await s.apply(ingress_class(controller="example.com/other"), expect={"b.example.com": {"404"}})
        await s.kubectl("delete", "ingressclass", "pyngress", expect={"b.example.com": {"pod-a"}})
        await s.apply(ingress_class(default=True), ingress("plain", "d.example.com", "web", cls=None),
                      expect={"d.example.com": {"pod-a"}})  # default class admission and selection

        # Secret create, update (a rotated certificate), delete, for an Ingress with a tls entry
        ca = trustme.CA()
        await s.apply(with_tls(ingress("web", "b.example.com", "web"), "web-tls"),
                      expect={"b.example.com": {"308"}})  # ssl-redirect once the host has TLS
        first = running.source.current
        await s.apply(tls_secret("web-tls", ca.issue_cert("b.example.com")), expect={"b.example.com": {"308"}})
        with_cert = running.source.current
        await s.apply(tls_secret("web-tls", ca.issue_cert("b.example.com")), expect={"b.example.com": {"308"}})
        rotated = running.source.current
        assert first is not None and with_cert is not None and rotated is not None
        assert first.tls != with_cert.tls != rotated.tls  # each certificate change is a new configuration
        await s.kubectl("delete", "secret", "web-tls", expect={"b.example.com": {"308"}})
        before = running.source.counters.applied
        await s.apply(tls_secret("unused", ca.issue_cert("c.example.com")), expect={"b.example.com": {"308"}})
        assert running.source.counters.applied == before  # a Secret nobody uses changes nothing: no swap
        assert max(s.latencies) < BUDGET, f"slowest change took {max(s.latencies):.3f}s: {s.latencies}"
        print("change -> swap latencies (s):", " ".join(f"{t:.3f}" for t in s.latencies))
