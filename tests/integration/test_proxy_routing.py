"""Routing and balancing through real sockets: spread over pods, default backend, 404 and 503."""

from __future__ import annotations

import re
from collections import Counter
from email.utils import parsedate_to_datetime

from harness import EchoBackend, Response, async_test, route, running_proxy, service, snapshot, stack

from pyngress.model import Endpoint
from pyngress.runtime.echo import start_echo


@async_test
async def test_fifty_requests_on_one_keepalive_connection_give_ten_to_each_of_five_pods() -> None:
    async with stack(pods=5) as s:
        async with await s.proxy.client() as c:
            pods = Counter([(await c.request("GET", f"/spread/{i}")).json()["pod"] for i in range(50)])
        assert pods == {f"pod-{i}": 10 for i in range(5)}
        assert sum(b.connections for b in s.backends) == 5  # one pooled upstream connection per pod


@async_test
async def test_fifty_requests_on_separate_connections_give_ten_to_each_of_five_pods() -> None:
    async with stack(pods=5) as s:
        pods = Counter([(await s.proxy.get(f"/spread/{i}")).json()["pod"] for i in range(50)])
        assert pods == {f"pod-{i}": 10 for i in range(5)}


@async_test
async def test_fifty_requests_over_five_runtime_echo_pods_give_ten_each() -> None:
    # the same spread with the project's own echo pods (pyngress.runtime.echo) instead of the test backend
    pods = [await start_echo(f"echo-{i}") for i in range(5)]
    try:
        svc = service("echo", [Endpoint("127.0.0.1", p.port, name=p.pod) for p in pods])
        async with running_proxy(snapshot([route(svc)])) as proxy, await proxy.client() as c:
            spread = Counter([(await c.request("GET", f"/e/{i}")).json()["pod"] for i in range(50)])
        assert spread == {f"echo-{i}": 10 for i in range(5)}
        assert [p.requests for p in pods] == [10] * 5
    finally:
        for p in pods:
            await p.close()


def _assert_generated(resp: Response, expected: int) -> None:
    assert resp.status == expected
    assert resp.header("Server") == "pyngress"
    assert parsedate_to_datetime(resp.header("Date") or "")  # a valid HTTP date
    assert int(resp.header("Content-Length") or -1) == len(resp.body)
    assert 0 < len(resp.body) <= 64
    assert resp.body.startswith(b"%d" % expected)


@async_test
async def test_request_without_route_or_default_backend_gets_generated_404() -> None:
    pod = await EchoBackend.start()
    try:
        snap = snapshot([route(service("only", [pod]), "/only", host="only.test")])
        async with running_proxy(snap) as proxy, await proxy.client() as c:
            resp = await c.request("GET", "/elsewhere", host="other.test")
            _assert_generated(resp, 404)
            assert resp.header("Connection") == "keep-alive"
            again = await c.request("GET", "/only", host="other.test")  # the connection is still usable
            assert again.status == 404
        assert pod.connections == 0
    finally:
        await pod.close()


@async_test
async def test_head_to_404_gets_head_without_body() -> None:
    async with running_proxy(snapshot()) as proxy, await proxy.client() as c:
        resp = await c.request("HEAD", "/nothing")
        assert resp.status == 404
        assert int(resp.header("Content-Length") or 0) > 0
        follow = await c.request("GET", "/nothing")  # a body after the HEAD head would show up here
        _assert_generated(follow, 404)


@async_test
async def test_request_matching_no_rule_goes_to_default_backend() -> None:
    ruled, fallback = await EchoBackend.start("ruled"), await EchoBackend.start("fallback")
    try:
        snap = snapshot([route(service("ruled", [ruled]), "/app", host="app.test")],
                        default=service("default-http-backend", [fallback]))
        async with running_proxy(snap) as proxy:
            assert (await proxy.get("/app/x", host="app.test")).json()["pod"] == "ruled"
            assert (await proxy.get("/other", host="app.test")).json()["pod"] == "fallback"
            assert (await proxy.get("/app/x", host="else.test")).json()["pod"] == "fallback"
    finally:
        await ruled.close()
        await fallback.close()


@async_test
async def test_backend_without_endpoints_gets_generated_503() -> None:
    snap = snapshot([route(service("empty", []))])
    async with running_proxy(snap) as proxy:
        _assert_generated(await proxy.get("/"), 503)


@async_test
async def test_host_and_path_select_backend() -> None:
    a, b = await EchoBackend.start("a"), await EchoBackend.start("b")
    try:
        snap = snapshot([route(service("a", [a]), "/", host="a.test"),
                         route(service("b", [b]), "/api", host="a.test")])
        async with running_proxy(snap) as proxy:
            assert (await proxy.get("/api/v1", host="A.TEST:80")).json()["pod"] == "b"
            assert (await proxy.get("/apiv1", host="a.test")).json()["pod"] == "a"
            assert (await proxy.get("/public/../api/x", host="a.test")).json()["pod"] == "b"
            assert re.fullmatch(r"/public/\.\./api/x", b.requests[-1].target)  # the URL is forwarded as sent
    finally:
        await a.close()
        await b.close()
