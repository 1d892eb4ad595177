"""What the client sees when endpoints refuse, stall, die mid-body, or send broken responses."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

from harness import (
    EchoBackend,
    async_test,
    refused_port,
    route,
    running_proxy,
    service,
    snapshot,
    stack,
)

from pyngress.model import Endpoint, ProxySettings


@async_test
async def test_get_to_refusing_endpoint_is_retried_on_the_other_and_succeeds() -> None:
    pod = await EchoBackend.start("alive")
    try:
        with refused_port() as dead:
            svc = service("half", [Endpoint("127.0.0.1", dead, name="dead"), pod])
            async with running_proxy(snapshot([route(svc)])) as proxy:
                for i in range(4):  # round robin reaches the dead endpoint first at least once
                    resp = await proxy.get(f"/try/{i}")
                    assert resp.status == 200, resp
                    assert resp.json()["pod"] == "alive"
        assert len(pod.requests) == 4
    finally:
        await pod.close()


@async_test
async def test_post_to_refusing_endpoint_is_retried_elsewhere_since_nothing_was_sent() -> None:
    # nginx's rule (issue 7): a non-idempotent request moves on only when the request never reached a backend
    pod = await EchoBackend.start("alive")
    try:
        with refused_port() as dead:
            svc = service("half", [Endpoint("127.0.0.1", dead, name="dead"), pod])
            async with running_proxy(snapshot([route(svc)])) as proxy:
                statuses = []
                for i in range(2):  # one of two consecutive POSTs goes to the dead endpoint first
                    async with await proxy.client() as c:
                        statuses.append((await c.request("POST", f"/p/{i}", body=b"data")).status)
        assert statuses == [200, 200]
        assert len(pod.requests) == 2 and all(r.body == b"data" for r in pod.requests)
    finally:
        await pod.close()


@async_test
async def test_all_endpoints_refusing_gives_502() -> None:
    with refused_port() as a, refused_port() as b:
        svc = service("dead", [Endpoint("127.0.0.1", a), Endpoint("127.0.0.1", b)])
        async with running_proxy(snapshot([route(svc)])) as proxy:
            resp = await proxy.get("/")
            assert resp.status == 502
            assert resp.header("Server") == "pyngress"


@async_test
async def test_backend_that_never_answers_gives_504_after_read_timeout() -> None:
    async with stack(settings=ProxySettings(proxy_read_timeout=0.3)) as s, await s.proxy.client() as c:
        started = time.monotonic()
        resp = await c.request("GET", "/stall")
        assert resp.status == 504
        assert 0.25 < time.monotonic() - started < 2.0


@async_test
async def test_backend_dying_mid_body_closes_client_connection_with_short_body() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/abort/100000")
        assert resp.status == 200
        assert resp.header("Content-Length") == "200000"
        assert not resp.complete
        assert len(resp.body) < 200000
        assert await c.at_eof()


@async_test
async def test_backend_dying_mid_chunked_body_never_sends_last_chunk() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/chunked-abort/200000")
        assert resp.status == 200 and resp.chunked
        assert not resp.complete
        assert await c.at_eof()


@async_test
async def test_malformed_response_head_gives_502() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/garbage")
        assert resp.status == 502
        assert resp.header("Server") == "pyngress"


@async_test
async def test_backend_sending_more_than_content_length_gives_client_exactly_content_length() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/overflow/1000")
        assert resp.status == 200 and len(resp.body) == 1000
        follow = await c.request("GET", "/after")  # the extra bytes never reach the client as a response
        assert follow.json()["path"] == "/after"
    assert s.backend.connections == 2  # the overflowing connection was not reused


@async_test
async def test_pooled_connection_closed_by_backend_is_retried_for_next_get() -> None:
    # The backend answers one request per connection and drops the connection when a second one arrives:
    # the keep-alive race, made deterministic.
    async with stack(close_on_second_request=True) as s, await s.proxy.client() as c:
        for i in range(3):
            resp = await c.request("GET", f"/n/{i}")
            assert resp.status == 200, resp
        assert [r.path for r in s.backend.requests] == ["/n/0", "/n/1", "/n/2"]
        assert s.backend.connections == 3


@async_test
async def test_pooled_connection_closed_by_backend_while_idle_is_not_a_502() -> None:
    async with stack() as s, await s.proxy.client() as c:
        for i in range(5):
            resp = await c.request("GET", f"/close?{i}")  # the backend closes after each response
            assert resp.status == 200
            assert (await c.request("GET", f"/next?{i}")).status == 200


@async_test
async def test_pooled_connection_closed_by_backend_is_not_resent_for_a_post() -> None:
    # The backend may have acted on a POST before closing: it is not sent again (502), unlike a GET.
    async with stack(close_on_second_request=True) as s, await s.proxy.client() as c:
        assert (await c.request("GET", "/warm")).status == 200
        resp = await c.request("POST", "/order", body=b"")
        assert resp.status == 502
        assert [r.target for r in s.backend.requests] == ["/warm"]


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A listener whose accept queue is full: Linux drops further SYNs, so a connect hangs until timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # backlog 0 still queues a connection or two; fill it
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@async_test
async def test_connect_timeout_with_no_other_endpoint_is_504() -> None:
    with unanswered_port() as port:
        only = service("slow", [Endpoint("127.0.0.1", port)])
        snap = snapshot([route(only)], settings=ProxySettings(proxy_connect_timeout=0.3))
        async with running_proxy(snap) as proxy, await proxy.client() as c:
            resp = await c.request("GET", "/")
            assert resp.status == 504
