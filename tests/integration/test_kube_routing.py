"""Cluster mode end to end: kubectl changes every watched kind on the test API server, the proxy follows.

After each step the proxy's Snapshot must equal a from-scratch compile of what `kubectl get` says the cluster
holds (routing parity with file mode), and requests through the proxy must reach the expected pod. Each step
must land within the 1 s budget; the test measures how long each took.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Any

from harness import EchoBackend
from kube_support import (
    Cluster,
    endpoint_slice,
    fake_cluster,
    ingress,
    ingress_class,
    needs_kubectl,
    service,
    source_and_proxy,
    tls_secret,
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


async def _settles(cluster: Cluster, running: Any, proxy: Any, expect: dict[str, set[str]],
                   timings: list[float]) -> None:
    """Wait (bounded) until the proxy serves a compile of what kubectl reads from the cluster (parity) and
    each host answers from the expected pods (or with the expected status)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    expected = await _cluster_snapshot(cluster)  # the cluster does not change while we wait
    seen: dict[str, set[str]] = {}

    def same() -> bool:
        current = running.source.current
        return current is not None and dataclasses.replace(expected, version=current.version) == current

    async def answers() -> bool:
        for host, wanted in expect.items():
            seen[host] = {await _pod_of(proxy, host) for _ in range(2 * len(wanted))}
            if seen[host] != wanted:
                return False
        return True

    while not (same() and await answers()):
        assert loop.time() - start < 5, f"expected {expect}, got {seen}; parity: {same()}"
        await asyncio.sleep(0.01)
    timings.append(loop.time() - start)


@needs_kubectl
async def test_proxy_follows_kubectl_changes_of_every_kind() -> None:
    async with contextlib.AsyncExitStack() as exits:
        pods = [await EchoBackend.start(f"pod-{c}") for c in "abc"]
        for p in pods:
            exits.push_async_callback(p.close)
        a, b, c = pods
        cluster = await exits.enter_async_context(fake_cluster())
        k = cluster.kubectl
        await k.apply(ingress_class(), service("web"), endpoint_slice("web-a", "web", [a]),
                      ingress("web", "a.example.com", "web"))
        running, proxy = await exits.enter_async_context(source_and_proxy(cluster.client))
        await asyncio.wait_for(running.source.synced.wait(), 5)
        t: list[float] = []
        await _settles(cluster, running, proxy, {"a.example.com": {"pod-a"}}, t)

        await k.apply(endpoint_slice("web-b", "web", [b]))  # EndpointSlice create: fast path
        await _settles(cluster, running, proxy, {"a.example.com": {"pod-a", "pod-b"}}, t)
        assert running.source.counters.fast >= 1
        await k.apply(endpoint_slice("web-a", "web", [a], ready=False))  # update
        await _settles(cluster, running, proxy, {"a.example.com": {"pod-b"}}, t)
        await k("delete", "endpointslice", "web-b")  # delete: no endpoint left
        await _settles(cluster, running, proxy, {"a.example.com": {"503"}}, t)
        await k.apply(endpoint_slice("web-a", "web", [a]))
        await _settles(cluster, running, proxy, {"a.example.com": {"pod-a"}}, t)

        await k.apply(ingress("web", "b.example.com", "web"))  # Ingress update: the host moves
        await _settles(cluster, running, proxy, {"a.example.com": {"404"}, "b.example.com": {"pod-a"}}, t)
        await k.apply(service("api"), endpoint_slice("api-c", "api", [c]), ingress("api", "c.example.com", "api"))
        await _settles(cluster, running, proxy, {"c.example.com": {"pod-c"}, "b.example.com": {"pod-a"}}, t)
        await k.apply(service("api", port_name="grpc"))  # Service update: the Ingress's port is gone
        await _settles(cluster, running, proxy, {"c.example.com": {"503"}}, t)
        await k("delete", "service", "api")  # Service delete
        await _settles(cluster, running, proxy, {"c.example.com": {"503"}}, t)
        await k("delete", "ingress", "api")  # Ingress delete
        await _settles(cluster, running, proxy, {"c.example.com": {"404"}}, t)

        await k.apply(ingress("web", "b.example.com", "web", cls="other"))  # class change moves it out
        await _settles(cluster, running, proxy, {"b.example.com": {"404"}}, t)
        await k.apply(ingress("web", "b.example.com", "web"))
        await _settles(cluster, running, proxy, {"b.example.com": {"pod-a"}}, t)
        await k.apply(ingress_class(controller="example.com/other"))  # IngressClass update: not ours any more
        await _settles(cluster, running, proxy, {"b.example.com": {"404"}}, t)
        await k("delete", "ingressclass", "pyngress")  # IngressClass delete: the name alone matches again
        await _settles(cluster, running, proxy, {"b.example.com": {"pod-a"}}, t)
        await k.apply(ingress_class(default=True), ingress("plain", "d.example.com", "web", cls=None))
        await _settles(cluster, running, proxy, {"d.example.com": {"pod-a"}}, t)  # default class admission

        before = running.source.counters.applied
        await k.apply(tls_secret("web-tls"))  # Secret create/update/delete: parity, no routing change
        await k("delete", "secret", "web-tls")
        await _settles(cluster, running, proxy, {"b.example.com": {"pod-a"}}, t)
        assert running.source.counters.applied == before  # no swap for a result that did not change
        assert max(t) < BUDGET, f"slowest change took {max(t):.3f}s: {t}"
