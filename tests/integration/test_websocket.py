"""WebSocket through the proxy: upgrade forwarded, 101 relayed, then a raw tunnel (runtime/tunnel.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os

from h2client import H2Client, H2Response
from harness import (
    EchoBackend,
    RawClient,
    async_test,
    build_request,
    route,
    running_proxy,
    service,
    snapshot,
    wait_until,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from wsbackend import ws_echo

from pyngress.model import ProxySettings
from pyngress.runtime.tunnel import Tunnel


@async_test
async def test_echo_text_and_binary_through_the_proxy() -> None:
    async with ws_echo() as pod, running_proxy(snapshot([route(service("ws", [pod.endpoint]))])) as proxy, \
            connect(f"ws://127.0.0.1:{proxy.port}/chat?room=1", max_size=None) as ws:
        assert await ws.recv() == "hello from ws-0"
        await ws.send("ping")
        assert await ws.recv() == "ping"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        assert pod.paths == ["/chat?room=1"]
        assert pod.headers[0]["x-forwarded-for"] == "127.0.0.1"
        assert pod.headers[0]["upgrade"].lower() == "websocket"
        assert [type(s) for s in proxy.server.sessions] == [Tunnel]
        assert not proxy.server.connections  # the HTTP/1.1 side let go of the connection


@async_test
async def test_large_messages_both_ways() -> None:
    big = os.urandom(8 * 1024 * 1024)
    async with ws_echo() as pod, running_proxy(snapshot([route(service("ws", [pod.endpoint]))])) as proxy, \
            connect(f"ws://127.0.0.1:{proxy.port}/", max_size=None) as ws:
        await ws.recv()
        for _ in range(2):
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 20) == big


@async_test
async def test_many_concurrent_sessions_over_two_pods() -> None:
    async with ws_echo("ws-a") as a, ws_echo("ws-b") as b, \
            running_proxy(snapshot([route(service("ws", [a.endpoint, b.endpoint]))])) as proxy:

        async def session(i: int) -> str:
            async with connect(f"ws://127.0.0.1:{proxy.port}/s/{i}") as ws:
                hello = await ws.recv()
                for j in range(20):
                    await ws.send(f"{i}:{j}")
                    assert await ws.recv() == f"{i}:{j}"
                return str(hello)

        hellos = await asyncio.wait_for(asyncio.gather(*(session(i) for i in range(50))), 30)
        assert sorted(set(hellos)) == ["hello from ws-a", "hello from ws-b"]
        assert a.sessions + b.sessions == 50 and abs(a.sessions - b.sessions) <= 2
        await wait_until(lambda: not proxy.server.sessions, what="tunnels closed")


@async_test
async def test_reload_keeps_the_session_and_a_removed_pods_session_ends_at_worker_shutdown_timeout() -> None:
    # issue 7: a pod removed from the configuration gets no new sessions; its open ones go on until
    # worker-shutdown-timeout (here 0.5 s), then close
    settings = ProxySettings(worker_shutdown_timeout=0.5)
    async with ws_echo("ws-a") as a, ws_echo("ws-b") as b, \
            running_proxy(snapshot([route(service("ws", [a.endpoint]))], settings=settings)) as proxy, \
            connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
        assert await ws.recv() == "hello from ws-a"
        for version in range(2, 6):  # reloads that keep pod a (another backend comes and goes)
            extra = [route(service("other", [b.endpoint]), "/other")] if version % 2 else []
            proxy.server.install(snapshot([route(service("ws", [a.endpoint])), *extra], version=version,
                                          settings=settings))
            await ws.send(f"still {version}")
            assert await ws.recv() == f"still {version}"
        proxy.server.install(snapshot([route(service("ws", [b.endpoint]))], version=9, settings=settings))
        await ws.send("after removal")  # pod a left: its session is drained, not cut
        assert await ws.recv() == "after removal"
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        await asyncio.wait_for(ws.wait_closed(), 5)
        # closed the WebSocket way: Going Away to the client, and a masked one to the pod
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001
        await wait_until(lambda: a.close_codes == [1001], what="pod a's close")
        async with connect(f"ws://127.0.0.1:{proxy.port}/") as ws2:
            assert await ws2.recv() == "hello from ws-b"


@async_test
async def test_idle_tunnel_closes_after_proxy_read_timeout() -> None:
    settings = ProxySettings(proxy_read_timeout=0.3)
    async with ws_echo() as pod, \
            running_proxy(snapshot([route(service("ws", [pod.endpoint]))], settings=settings)) as proxy, \
            connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=None) as ws:
        await ws.recv()
        for i in range(4):  # activity keeps it open past the timeout
            await asyncio.sleep(0.15)
            await ws.send(str(i))
            assert await ws.recv() == str(i)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert asyncio.get_running_loop().time() - started >= 0.25
        assert not proxy.server.sessions


@async_test
async def test_a_non_101_answer_is_relayed_as_a_response() -> None:
    pod = await EchoBackend.start("http-only")
    try:
        async with running_proxy(snapshot([route(service("plain", [pod]))])) as proxy, await proxy.client() as c:
            await c.send(build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                      ("Sec-WebSocket-Version", "13")]) + b"early bytes")
            resp = await c.response()
            assert resp.status == 200 and resp.header("connection") == "close"
            req = pod.requests[-1]
            assert req.header("upgrade") == "websocket" and "upgrade" in (req.header("connection") or "")
            assert req.body == b"" and pod.bytes_received == len(req.raw_head)  # the early bytes never left
            assert await asyncio.wait_for(c.reader.read(), 5) == b""  # and the connection closed after it
    finally:
        await pod.close()


@async_test
async def test_raw_tunnel_relays_early_bytes_after_101_and_half_closes() -> None:
    seen: list[bytes] = []
    done = asyncio.Event()

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nfrom-pod")
        seen.append(await reader.read())  # everything the client sends, until its EOF comes through
        writer.write(b" after-eof")  # our direction is still open
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(pod, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        from pyngress.model import Endpoint

        svc = service("raw", [Endpoint("127.0.0.1", port)])
        async with running_proxy(snapshot([route(svc)])) as proxy:
            c = await RawClient.connect(proxy.port)
            await c.send(build_request("GET", "/", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                    ("Sec-WebSocket-Version", "13")]) + b"early")
            head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"upgrade: websocket" in head.lower() and b"sec-websocket-accept" in head.lower()
            assert await asyncio.wait_for(c.reader.readexactly(8), 5) == b"from-pod"
            c.writer.write(b" more")
            c.writer.write_eof()
            assert await asyncio.wait_for(c.reader.read(), 5) == b" after-eof"
            await asyncio.wait_for(done.wait(), 5)
            assert seen[1] == b"early more"
            await c.close()
            await wait_until(lambda: not proxy.server.sessions, what="tunnel closed")
    finally:
        server.close()
        await server.wait_closed()


def _masked_text(payload: bytes) -> bytes:
    """One client WebSocket text frame (RFC 6455 5.2: client frames are masked), payload < 65536 bytes."""
    mask = b"\x01\x02\x03\x04"
    length = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + len(payload).to_bytes(2)
    return bytes([0x81]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _server_texts(data: bytes) -> list[bytes]:
    """The payloads of the unmasked short text frames in `data`."""
    texts = []
    while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
        size = data[1] & 0x7F
        texts.append(data[2 : 2 + size])
        data = data[2 + size :]
    return texts


@async_test
async def test_websocket_over_http2_extended_connect() -> None:
    async with ws_echo() as pod, running_proxy(snapshot([route(service("ws", [pod.endpoint]))])) as proxy, \
            await H2Client.connect(proxy.port) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 1
        stream = client.conn.get_next_available_stream_id()
        client.responses[stream] = resp = H2Response()
        client.conn.send_headers(stream, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                                          (b":scheme", b"http"), (b":path", b"/chat?x=1"),
                                          (b":authority", b"example.com"), (b"sec-websocket-version", b"13")])
        client.flush()
        await wait_until(lambda: resp.status != 0, what="CONNECT answer")
        assert resp.status == 200
        await wait_until(lambda: b"hello from ws-0" in resp.body, what="the pod's greeting")
        await client.send_body(stream, _masked_text(b"over h2"), end=False)
        await wait_until(lambda: b"over h2" in resp.body, what="echo")
        assert _server_texts(bytes(resp.body)) == [b"hello from ws-0", b"over h2"]
        assert pod.paths == ["/chat?x=1"] and pod.headers[0]["upgrade"] == "websocket"
        assert "sec-websocket-key" in pod.headers[0]
        client.conn.reset_stream(stream)
        client.flush()
        await wait_until(lambda: pod.open == 0, what="pod connection closed")


@async_test
async def test_drain_ends_an_http2_websocket_with_a_going_away_close_then_end_stream() -> None:
    async with ws_echo() as pod, running_proxy(snapshot([route(service("ws", [pod.endpoint]))])) as proxy, \
            await H2Client.connect(proxy.port) as client:
        stream = client.conn.get_next_available_stream_id()
        client.responses[stream] = resp = H2Response()
        client.conn.send_headers(stream, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                                          (b":scheme", b"http"), (b":path", b"/"),
                                          (b":authority", b"example.com"), (b"sec-websocket-version", b"13")])
        client.flush()
        await wait_until(lambda: b"hello from ws-0" in resp.body, what="the pod's greeting")
        message = _masked_text(b"y" * 200)
        await client.send_body(stream, message[:50], end=False)  # the client is mid-frame at the drain
        (h2conn,) = proxy.server.sessions
        await wait_until(lambda: not h2conn.streams[stream].pod.to_pod.at_boundary,  # type: ignore[attr-defined]
                         what="the first bytes relayed")
        drain = asyncio.create_task(proxy.server.drain(30))
        # the pod's direction is between frames: the client's close frame comes at once, as DATA
        await wait_until(lambda: bytes(resp.body).endswith(b"\x88\x02\x03\xe9"), what="the client's close")
        assert pod.messages == [] and pod.close_codes == []
        await client.send_body(stream, message[50:] + _masked_close(1001), end=True)  # frame's end, then answer
        await asyncio.wait_for(resp.done.wait(), 5)
        assert resp.reset in (None, 0)  # END_STREAM (a NO_ERROR reset may follow it), not an error
        assert bytes(resp.body) == b"\x81\x0fhello from ws-0\x88\x02\x03\xe9"  # nothing after the close
        await wait_until(lambda: pod.close_codes == [1001], what="the pod's masked close, after the frame")
        assert pod.messages == ["y" * 200]
        await asyncio.wait_for(drain, 5)


@async_test
async def test_an_http2_websocket_to_a_removed_pod_gets_going_away_at_worker_shutdown_timeout() -> None:
    settings = ProxySettings(worker_shutdown_timeout=0.3)
    async with ws_echo("ws-a") as a, ws_echo("ws-b") as b, \
            running_proxy(snapshot([route(service("ws", [a.endpoint]))], settings=settings)) as proxy, \
            await H2Client.connect(proxy.port) as client:
        stream = client.conn.get_next_available_stream_id()
        client.responses[stream] = resp = H2Response()
        client.conn.send_headers(stream, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                                          (b":scheme", b"http"), (b":path", b"/"),
                                          (b":authority", b"example.com"), (b"sec-websocket-version", b"13")])
        client.flush()
        await wait_until(lambda: b"hello from ws-a" in resp.body, what="the pod's greeting")
        proxy.server.install(snapshot([route(service("ws", [b.endpoint]))], version=2, settings=settings))
        await client.send_body(stream, _masked_text(b"after removal"), end=False)  # still open: draining
        await wait_until(lambda: b"after removal" in resp.body, what="echo after removal")
        await wait_until(lambda: bytes(resp.body).endswith(b"\x88\x02\x03\xe9"), what="Going Away")
        await client.send_body(stream, _masked_close(1001), end=True)
        await asyncio.wait_for(resp.done.wait(), 5)
        await wait_until(lambda: a.close_codes == [1001], what="pod a's masked close")


@async_test
async def test_drain_sends_both_ends_a_going_away_close_and_ends_when_they_answer() -> None:
    async with ws_echo() as pod, running_proxy(snapshot([route(service("ws", [pod.endpoint]))])) as proxy, \
            connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
        assert await ws.recv() == "hello from ws-0"
        await ws.send("before drain")
        assert await ws.recv() == "before drain"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(proxy.server.drain(30), 10)  # ends when the handshakes do, not after 30 s
        assert loop.time() - started < 5
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001  # Going Away
        await wait_until(lambda: pod.close_codes == [1001], what="the pod's close")  # masked, or it says 1002
        assert not proxy.server.sessions


@async_test
async def test_drain_closes_a_direction_only_after_the_frame_in_progress() -> None:
    async with ws_echo() as pod, running_proxy(snapshot([route(service("ws", [pod.endpoint]))])) as proxy:
        c = await RawClient.connect(proxy.port)
        await c.send(build_request("GET", "/", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                ("Sec-WebSocket-Version", "13")]))
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        greeting = b"hello from ws-0"
        assert await asyncio.wait_for(c.reader.readexactly(2 + len(greeting)), 5) == b"\x81\x0f" + greeting
        message = _masked_text(b"x" * 300)  # a 16-bit length: 8-byte header with the mask key
        await c.send(message[:100])  # the client is in the middle of a frame when the drain begins
        (tunnel,) = proxy.server.sessions
        assert isinstance(tunnel, Tunnel)
        await wait_until(lambda: not tunnel.client_half.frames.at_boundary, what="the first bytes relayed")
        drain = asyncio.create_task(proxy.server.drain(30))
        # the pod's direction is between frames: the client gets its close frame at once, unmasked, 1001
        assert await asyncio.wait_for(c.reader.readexactly(4), 5) == b"\x88\x02\x03\xe9"
        assert pod.close_codes == [] and pod.messages == []  # the pod has neither the close nor the message
        await c.send(message[100:] + _masked_text(b"after the frame"))  # the frame ends, another one follows
        await wait_until(lambda: pod.close_codes == [1001], what="the pod's close, after the frame")
        assert pod.messages == ["x" * 300]  # the frame in progress arrived whole; the one after it did not
        await c.send(_masked_close(1001))  # the client answers: the handshake is complete on both ends
        assert await asyncio.wait_for(c.reader.read(), 5) == b""  # nothing else (the echo is dropped), then EOF
        await asyncio.wait_for(drain, 5)
        await c.close()
        assert not proxy.server.sessions


@async_test
async def test_drain_of_a_half_closed_tunnel_sends_only_where_it_can() -> None:
    release = asyncio.Event()

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        assert await reader.read() == b""  # the client's EOF, passed on
        await release.wait()
        writer.close()

    server = await asyncio.start_server(pod, "127.0.0.1", 0)
    try:
        from pyngress.model import Endpoint

        svc = service("raw", [Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])])
        async with running_proxy(snapshot([route(svc)])) as proxy:
            c = await RawClient.connect(proxy.port)
            await c.send(build_request("GET", "/", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                    ("Sec-WebSocket-Version", "13")]))
            assert (await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101 ")
            c.writer.write_eof()  # the client has finished sending; the pod's direction is still open
            (tunnel,) = proxy.server.sessions
            assert isinstance(tunnel, Tunnel)
            await wait_until(lambda: tunnel.client_half.ended, what="the client's EOF relayed")
            drain = asyncio.create_task(proxy.server.drain(30))
            # the client still reads: it gets Going Away, and nothing is written after the EOF sent to the pod
            assert await asyncio.wait_for(c.reader.read(), 5) == b"\x88\x02\x03\xe9"
            release.set()
            await asyncio.wait_for(drain, 5)
            await c.close()
    finally:
        server.close()
        await server.wait_closed()


def _masked_close(status: int) -> bytes:
    mask = b"\x05\x06\x07\x08"
    return bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i] for i, b in enumerate(status.to_bytes(2, "big")))
