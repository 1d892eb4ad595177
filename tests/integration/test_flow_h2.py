"""Flow and access control for HTTP/2 clients (h2c with prior knowledge): the same limits, lists and body
size as over HTTP/1.1, and the PROXY protocol address carried into the HTTP/2 connection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator

from h2client import TIMEOUT, H2Client
from harness import EchoBackend, async_test, pattern, route, service, snapshot, wait_until

from pyngress.model import ProxySettings
from pyngress.model.flow import FlowSpec, RateSpec
from pyngress.runtime.proxy_protocol import encode_v1
from pyngress.runtime.server import ProxyServer


@dataclasses.dataclass
class Running:
    server: ProxyServer
    port: int
    backend: EchoBackend


@contextlib.asynccontextmanager
async def proxy(flow: FlowSpec | None, *, max_body: int = 1 << 20,
                settings: ProxySettings | None = None) -> AsyncIterator[Running]:
    backend = await EchoBackend.start()
    routes = [dataclasses.replace(route(service("echo", [backend])), flow=flow, max_body=max_body)]
    server = ProxyServer(snapshot(routes, settings=settings), rng=random.Random(0))
    try:
        yield Running(server, await server.listen("127.0.0.1", 0), backend)
    finally:
        await server.drain(1.0)
        await backend.close()


RPM = RateSpec(1 / 60, 3, "1 r/m")


@async_test
async def test_rate_limit_applies_to_http2_streams() -> None:
    async with proxy(FlowSpec("default/site", rates=(RPM,))) as p, await H2Client.connect(p.port) as c:
        got = [await c.request("GET", "/") for _ in range(4)]
        assert [r.status for r in got] == [200, 200, 200, 429]
        assert got[3].header(b"retry-after") is not None
        assert len(p.backend.requests) == 3


@async_test
async def test_denylist_applies_to_http2_streams() -> None:
    async with proxy(FlowSpec("default/site", deny=("127.0.0.0/8",))) as p, await H2Client.connect(p.port) as c:
        assert (await c.request("GET", "/")).status == 403
        assert p.backend.requests == []


@async_test
async def test_connection_limit_counts_concurrent_streams() -> None:
    async with proxy(FlowSpec("default/site", connections=1)) as p, await H2Client.connect(p.port) as c:
        slow = c.start("GET", "/delay/1.5")
        await wait_until(lambda: len(p.backend.requests) == 1, what="the slow stream at the pod")
        assert (await c.request("GET", "/")).status == 429
        assert (await c.response(slow)).status == 200
        assert (await c.request("GET", "/")).status == 200  # the stream's slot was given back


@async_test
async def test_413_for_http2_bodies_declared_or_growing() -> None:
    async with proxy(None, max_body=1000) as p, await H2Client.connect(p.port) as c:
        declared = c.start("POST", "/", headers=[("content-length", "5000")], end=False)
        assert (await c.response(declared)).status == 413
        growing = c.start("POST", "/", end=False)
        await c.send_body(growing, pattern(600), end=False)
        await c.send_body(growing, pattern(600), end=False)
        assert (await c.response(growing)).status == 413
        ok = await c.request("POST", "/", body=pattern(900))
        assert ok.status == 200
        assert len(p.backend.requests) == 1  # only the one within the limit reached the pod
        assert p.server.flow.refused_body == 2


@async_test
async def test_proxy_protocol_address_is_the_http2_client() -> None:
    settings = ProxySettings(use_proxy_protocol=True)
    async with proxy(FlowSpec("default/site", deny=("203.0.113.0/24",)), settings=settings) as p:
        for source, status in (("203.0.113.5", 403), ("198.51.100.5", 200)):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port, limit=1 << 20)
            writer.write(encode_v1(source, 1234, "10.0.0.1", 80))
            client = H2Client(reader, writer, False)
            client.conn.initiate_connection()
            client.flush()
            client._task = asyncio.create_task(client._read())
            try:
                await asyncio.wait_for(client.settings_seen.wait(), TIMEOUT)
                assert (await client.request("GET", "/")).status == status
            finally:
                await client.close()
        assert p.backend.requests[0].header("X-Real-IP") == "198.51.100.5"


@async_test
async def test_a_websocket_holds_its_connection_slot_while_open() -> None:
    # nginx's limit_conn counts a WebSocket for its whole life: so do we (the tunnel keeps the upgrade's slot)
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus
    from wsbackend import ws_echo

    flow = FlowSpec("default/site", connections=1)
    async with ws_echo() as pod:
        routes = [dataclasses.replace(route(service("ws", [pod.endpoint])), flow=flow)]
        server = ProxyServer(snapshot(routes), rng=random.Random(0))
        port = await server.listen("127.0.0.1", 0)
        try:
            async with connect(f"ws://127.0.0.1:{port}/chat", max_size=None) as ws:
                assert await ws.recv() == "hello from ws-0"
                with contextlib.suppress(InvalidStatus):
                    async with connect(f"ws://127.0.0.1:{port}/chat") as second:
                        raise AssertionError(f"a second WebSocket was admitted: {await second.recv()}")
                assert server.flow.refused_connections == 1
                await ws.send("still open")  # the refusal did not disturb the open one
                assert await ws.recv() == "still open"
            await wait_until(lambda: not server.sessions, what="the tunnel closed")
            async with connect(f"ws://127.0.0.1:{port}/chat") as third:  # its slot was given back on close
                assert await third.recv() == "hello from ws-0"
        finally:
            await server.drain(1.0)


@async_test
async def test_an_http2_websocket_holds_its_connection_slot_until_its_stream_ends() -> None:
    from h2client import H2Response
    from wsbackend import ws_echo

    flow = FlowSpec("default/site", connections=1)
    async with ws_echo() as pod:
        routes = [dataclasses.replace(route(service("ws", [pod.endpoint])), flow=flow)]
        server = ProxyServer(snapshot(routes), rng=random.Random(0))
        port = await server.listen("127.0.0.1", 0)
        try:
            async with await H2Client.connect(port) as client:

                def websocket() -> H2Response:
                    stream = client.conn.get_next_available_stream_id()
                    client.responses[stream] = resp = H2Response()
                    client.conn.send_headers(stream, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                                                      (b":scheme", b"http"), (b":path", b"/chat"),
                                                      (b":authority", b"example.com"),
                                                      (b"sec-websocket-version", b"13")])
                    client.flush()
                    resp.stream_id = stream  # type: ignore[attr-defined]
                    return resp

                first = websocket()
                await wait_until(lambda: b"hello from ws-0" in first.body, what="the first WebSocket open")
                second = websocket()
                await wait_until(lambda: second.status != 0, what="the second's answer")
                assert second.status == 429
                client.conn.reset_stream(first.stream_id)  # type: ignore[attr-defined]
                client.flush()
                await wait_until(lambda: pod.open == 0, what="the first WebSocket closed")
                third = websocket()
                await wait_until(lambda: third.status != 0, what="the third's answer")
                assert third.status == 200
        finally:
            await server.drain(1.0)
