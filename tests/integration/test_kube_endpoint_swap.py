"""Issue 6's EndpointSlice fast path end to end: a kubectl slice change reaches the proxy without a route
table rebuild (the same table object serves), the other Service's balancer is the same object, and requests
follow the new endpoints at once."""

from __future__ import annotations

import asyncio
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


@async_test
async def test_a_request_in_flight_finishes_on_the_endpoint_it_was_sent_to() -> None:
    from harness import route, running_proxy, snapshot
    from harness import service as backend

    a, b = await EchoBackend.start("pod-a"), await EchoBackend.start("pod-b")
    try:
        first = snapshot([route(backend("web", [a]))])
        async with running_proxy(first) as proxy:
            table = proxy.server.dataplane.serving.table
            async with await proxy.client() as slow:
                pending = asyncio.ensure_future(slow.request("GET", "/delay/0.3"))
                await a.wait_requests(1)  # the request reached pod-a
                proxy.server.install(snapshot([route(backend("web", [b]))], version=2))  # pod-a is gone
                assert proxy.server.dataplane.serving.table is table
                assert (await proxy.get("/")).json()["pod"] == "pod-b"  # new requests: the new endpoint
                response = await pending
                assert response.status == 200 and response.json()["pod"] == "pod-a"
    finally:
        await a.close()
        await b.close()
