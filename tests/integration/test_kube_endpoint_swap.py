"""Issue 6's EndpointSlice fast path end to end: a kubectl slice change reaches the proxy without a route
table rebuild (the same table object serves), the other Service's balancer is the same object, and requests
follow the new endpoints at once."""

from __future__ import annotations

import contextlib

from harness import EchoBackend, async_test, wait_until
from kube_support import (
    endpoint_slice,
    fake_cluster,
    ingress,
    ingress_class,
    needs_kubectl,
    service,
    source_and_proxy,
)


@needs_kubectl
@async_test
async def test_slice_change_swaps_endpoints_without_rebuilding_routes() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b, c = [await EchoBackend.start(f"pod-{n}") for n in "abc"]
        for pod in (a, b, c):
            exits.push_async_callback(pod.close)
        cluster = await exits.enter_async_context(fake_cluster())
        await cluster.kubectl.apply(ingress_class(), service("web"), service("api"),
                                    endpoint_slice("web-a", "web", [a]), endpoint_slice("api-c", "api", [c]),
                                    ingress("web", "web.example.com", "web"),
                                    ingress("api", "api.example.com", "api"))
        running, proxy = await exits.enter_async_context(source_and_proxy(cluster.client))
        await wait_until(running.source.synced.is_set, what="synced")
        before = proxy.server.dataplane.serving
        api_balancer = before.balancers["default/api:http"]
        assert (await proxy.get("/", host="web.example.com")).json()["pod"] == "pod-a"

        await cluster.kubectl.apply(endpoint_slice("web-a", "web", [b]))  # the pod is replaced
        await wait_until(lambda: proxy.server.dataplane.serving is not before, what="the swap")
        after = proxy.server.dataplane.serving
        assert running.source.counters.fast >= 1
        assert after.table is before.table  # routes not rebuilt
        assert after.balancers["default/api:http"] is api_balancer
        assert after.endpoint_keys == {b.endpoint.key, c.endpoint.key}
        pods = {(await proxy.get("/", host="web.example.com")).json()["pod"] for _ in range(4)}
        assert pods == {"pod-b"}
        assert (await proxy.get("/", host="api.example.com")).json()["pod"] == "pod-c"
