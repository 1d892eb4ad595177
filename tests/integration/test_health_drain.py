"""Draining endpoints: removed ones finish in-flight work then lose their connections; terminating ones serve
only as a fallback; worker-shutdown-timeout bounds the wait."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from harness import async_test, refused_port, route, running_proxy, service, snapshot, wait_until
from health_pods import HealthPod, with_retry

from pyngress.model import (
    ActiveCheck,
    AffinitySpec,
    Endpoint,
    HealthSpec,
    PathType,
    ProxySettings,
    Route,
    Snapshot,
)


def terminating(pod: HealthPod) -> Endpoint:
    return Endpoint("127.0.0.1", pod.port, name=pod.name, terminating=True)


async def pods(exits: contextlib.AsyncExitStack, n: int) -> list[HealthPod]:
    made = []
    for i in range(n):
        pod = await HealthPod.start(f"pod-{i}")
        exits.push_async_callback(pod.close)
        made.append(pod)
    return made


@async_test
async def test_a_removed_endpoint_finishes_its_request_then_its_connections_close() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("s", [a]))])))
        server = proxy.server
        async with await proxy.client() as client:
            await client.send(b"GET /delay/0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            await a.wait_requests(1)
            server.install(snapshot([route(service("s", [b]))], version=2))  # a removed mid-request
            assert (await client.response()).status == 200  # the in-flight request finished on a
            assert (await client.request("GET", "/next")).json()["pod"] == "pod-1"
        await wait_until(lambda: server.pool.open_count(a.endpoint.key) == 0, what="a's connections closed")
        assert len(a.served) == 1


@async_test
async def test_worker_shutdown_timeout_aborts_what_a_removed_endpoint_still_holds() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        settings = ProxySettings(worker_shutdown_timeout=0.3, proxy_read_timeout=30)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("s", [a]))],
                                                                       settings=settings)))
        server = proxy.server
        async with await proxy.client() as client:
            await client.send(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
            await a.wait_requests(1)
            loop = asyncio.get_running_loop()
            removed = loop.time()
            server.install(snapshot([route(service("s", [b]))], version=2, settings=settings))
            await wait_until(lambda: server.pool.open_count(a.endpoint.key) == 0, what="aborted")
            assert 0.3 <= loop.time() - removed <= 0.3 + 2.5  # the deadline, plus up to two ticks
            # the stalled GET was never answered: it moves on to the endpoint now configured (b)
            await b.wait_requests(1)
            assert b.requests[0].path == "/stall"


@async_test
async def test_terminating_endpoints_get_no_new_requests_unless_none_is_ready() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        first = snapshot([route(service("s", [a, terminating(b)]))])
        proxy = await exits.enter_async_context(running_proxy(first))
        async with await proxy.client() as client:
            assert {(await client.request("GET", "/")).json()["pod"] for _ in range(10)} == {"pod-0"}
            proxy.server.install(snapshot([route(service("s", [terminating(a), terminating(b)]))], version=2))
            served = {(await client.request("GET", "/")).json()["pod"] for _ in range(10)}
            assert served == {"pod-0", "pod-1"}  # KEP-1669: serving && terminating ones serve as a fallback


@async_test
async def test_a_terminating_pod_keeps_its_cookie_users_and_gets_no_new_ones() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        sticky = AffinitySpec(kind="cookie", salt="s")

        def config(version: int, *endpoints: Endpoint) -> Snapshot:
            r = Route("", "/", PathType.PREFIX, service("s", list(endpoints)), "default/s", affinity=sticky)
            return snapshot([r], version=version)

        proxy = await exits.enter_async_context(running_proxy(config(1, a.endpoint, b.endpoint)))
        cookies: dict[str, str] = {}
        for _ in range(4):  # two fresh sessions per pod
            resp = await proxy.get("/")
            cookies.setdefault(resp.json()["pod"], (resp.header("Set-Cookie") or "").split(";")[0])
        assert set(cookies) == {"pod-0", "pod-1"}
        proxy.server.install(config(2, a.endpoint, terminating(b)))
        for _ in range(5):
            kept = await proxy.get("/", headers=[("Cookie", cookies["pod-1"])])
            assert kept.json()["pod"] == "pod-1" and not kept.has("Set-Cookie")  # its user stays
        assert {(await proxy.get("/")).json()["pod"] for _ in range(6)} == {"pod-0"}  # nobody new
        proxy.server.install(config(3, a.endpoint))  # gone: the session moves
        moved = await proxy.get("/", headers=[("Cookie", cookies["pod-1"])])
        assert moved.json()["pod"] == "pod-0" and moved.has("Set-Cookie")


@async_test
async def test_tcp_check_takes_a_refusing_endpoint_out() -> None:
    async with contextlib.AsyncExitStack() as exits:
        (a,) = await pods(exits, 1)
        with refused_port() as dead:
            check = ActiveCheck(tcp=True, interval=0.05, timeout=0.5, unhealthy_threshold=2)
            svc = replace(service("s", [a.endpoint, Endpoint("127.0.0.1", dead)]), health=HealthSpec(active=check))
            no_retry = with_retry(route(svc), on_error=False, on_timeout=False)  # a 200 is not a retry's work
            proxy = await exits.enter_async_context(running_proxy(snapshot([no_retry])))
            key = Endpoint("127.0.0.1", dead).key
            await wait_until(lambda: key in proxy.server.health.down, what="the refusing endpoint out")
            assert a.endpoint.key not in proxy.server.health.down
            async with await proxy.client() as client:
                assert {(await client.request("GET", "/")).status for _ in range(10)} == {200}


@async_test
async def test_next_upstream_timeout_stops_further_attempts() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        a.hang_up = True
        a.hang_up_after = 0.01  # longer than uvloop's clock step (1 ms), so the 1 µs timeout is surely over
        svc = service("s", [a, b])
        quick = with_retry(route(svc, "/quick"), timeout=0.000001)  # already over at the first failure
        patient = with_retry(route(svc, "/patient"), timeout=60.0)
        proxy = await exits.enter_async_context(running_proxy(snapshot([quick, patient])))
        async with await proxy.client() as client:
            assert sorted([(await client.request("GET", "/quick")).status for _ in range(2)]) == [200, 502]
            assert [(await client.request("GET", "/patient")).status for _ in range(2)] == [200, 200]


@async_test
async def test_a_terminating_pods_pooled_connections_close_after_their_requests() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await pods(exits, 2)
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("s", [a, b]))])))
        server = proxy.server
        async with await proxy.client() as client:
            for _ in range(4):
                assert (await client.request("GET", "/")).status == 200
        assert server.pool.open_count(b.endpoint.key) == 1  # pooled, idle
        server.install(snapshot([route(service("s", [a, terminating(b)]))], version=2))
        await wait_until(lambda: server.pool.open_count(b.endpoint.key) == 0, what="b's idle connection closed")
        assert server.pool.open_count(a.endpoint.key) == 1
