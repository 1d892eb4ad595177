"""use-proxy-protocol on the HTTP listener: v1 and v2 headers name the client, malformed ones close the
connection, untrusted peers cannot send one, and a silent peer is closed after the header timeout."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
from harness import EchoBackend, RawClient, async_test, route, service, snapshot
from tls_harness import app, compile_docs, configmap, tls_proxy

from pyngress.model import ProxySettings
from pyngress.model.flow import FlowSpec
from pyngress.runtime.proxy_protocol import encode_v1, encode_v2, encode_v2_local
from pyngress.runtime.server import ProxyServer

REQUEST = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"


@dataclasses.dataclass
class Listening:
    server: ProxyServer
    port: int
    backend: EchoBackend


@contextlib.asynccontextmanager
async def proxied(settings: ProxySettings, flow: FlowSpec | None = None) -> AsyncIterator[Listening]:
    backend = await EchoBackend.start()
    routes = [dataclasses.replace(route(service("echo", [backend])), flow=flow)]
    server = ProxyServer(snapshot(routes, settings=settings), rng=random.Random(0))
    try:
        yield Listening(server, await server.listen("127.0.0.1", 0), backend)
    finally:
        await server.drain(1.0)
        await backend.close()


ON = ProxySettings(use_proxy_protocol=True)


@async_test
async def test_v1_header_names_the_client() -> None:
    async with proxied(ON) as p, await RawClient.connect(p.port) as c:
        await c.send(encode_v1("203.0.113.7", 40000, "10.0.0.1", 80) + REQUEST)
        assert (await c.response()).status == 200
        await c.send(REQUEST)  # the header comes once per connection; later requests keep its address
        assert (await c.response()).status == 200
        for got in p.backend.requests:
            assert got.header("X-Real-IP") == "203.0.113.7"
            assert got.header("X-Forwarded-For") == "203.0.113.7"


@async_test
async def test_v2_ipv6_header_split_over_writes_names_the_client() -> None:
    async with proxied(ON) as p, await RawClient.connect(p.port) as c:
        header = encode_v2("2001:db8::42", 1234, "2001:db8::1", 443, tlvs=b"\x04\x00\x02ab")
        await c.send(header[:7])
        await c.send(header[7:20])
        await c.send(header[20:] + REQUEST)
        assert (await c.response()).status == 200
        assert p.backend.requests[0].header("X-Real-IP") == "2001:db8::42"


@async_test
async def test_local_header_keeps_the_peer() -> None:
    async with proxied(ON) as p, await RawClient.connect(p.port) as c:
        await c.send(encode_v2_local() + REQUEST)
        assert (await c.response()).status == 200
        assert p.backend.requests[0].header("X-Real-IP") == "127.0.0.1"


@async_test
async def test_limits_key_on_the_proxied_address() -> None:
    async with proxied(ON, FlowSpec("default/site", deny=("203.0.113.0/24",))) as p:
        async with await RawClient.connect(p.port) as c:
            await c.send(encode_v1("203.0.113.7", 1, "10.0.0.1", 80) + REQUEST)
            assert (await c.response()).status == 403
        async with await RawClient.connect(p.port) as c:
            await c.send(encode_v1("198.51.100.7", 1, "10.0.0.1", 80) + REQUEST)
            assert (await c.response()).status == 200


@async_test
async def test_malformed_header_closes_the_connection_and_nothing_reaches_a_pod() -> None:
    async with proxied(ON) as p:
        for bad in (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n", b"PROXY TCP4 nonsense\r\n",
                    b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + b"\0" * 12, REQUEST):
            async with await RawClient.connect(p.port) as c:
                await c.send(bad + REQUEST)
                assert await c.at_eof()
        assert p.backend.connections == 0


@async_test
async def test_untrusted_peer_cannot_send_a_header() -> None:
    settings = dataclasses.replace(ON, trusted_proxies=("10.0.0.0/8",))
    async with proxied(settings) as p, await RawClient.connect(p.port) as c:
        await c.send(encode_v1("203.0.113.7", 1, "10.0.0.1", 80) + REQUEST)
        assert (await c.response()).status == 400
    async with proxied(settings) as p, await RawClient.connect(p.port) as c:
        assert (await c.request("GET", "/")).status == 200  # plain HTTP from it is fine
        assert p.backend.requests[0].header("X-Real-IP") == "127.0.0.1"


@async_test
async def test_silent_peer_is_closed_after_the_header_timeout() -> None:
    settings = dataclasses.replace(ON, proxy_protocol_header_timeout=0.3)
    async with proxied(settings) as p, await RawClient.connect(p.port) as c:
        await c.send(b"PROXY TCP4 ")
        assert await c.at_eof(timeout=3.0)
        assert not p.server.handshakes


@async_test
async def test_off_by_default_a_header_is_a_bad_request() -> None:
    async with proxied(ProxySettings()) as p, await RawClient.connect(p.port) as c:
        await c.send(encode_v1("203.0.113.7", 1, "10.0.0.1", 80) + REQUEST)
        assert (await c.response()).status == 400


async def tls_after_header(port: int, header: bytes, server_name: str) -> RawClient:
    """A TLS client whose connection starts with `header`, as a TCP load balancer in front would send it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, header)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname=server_name, limit=1 << 20), 5.0)
    except BaseException:
        sock.close()
        raise
    return RawClient(reader, writer)


@async_test
async def test_https_port_reads_the_header_before_the_tls_handshake() -> None:
    backend = await EchoBackend.start()
    try:
        snap = compile_docs([*app("web", ["a.example.com"], backend.port),
                             configmap(**{"use-proxy-protocol": "true"})])
        async with tls_proxy(snap) as proxy:
            cases = [(encode_v1("203.0.113.9", 5, "10.0.0.1", 443), "203.0.113.9"),
                     (encode_v2("2001:db8::9", 5, "2001:db8::1", 443), "2001:db8::9"),
                     (encode_v2_local(), "127.0.0.1")]
            for header, client in cases:
                c = await tls_after_header(proxy.https_port, header, "a.example.com")
                try:
                    resp = await c.request("GET", "/", host="a.example.com")
                finally:
                    with contextlib.suppress(ssl.SSLError):
                        await c.close()
                assert resp.status == 200
                got = backend.requests[-1]
                assert (got.header("X-Real-IP"), got.header("X-Forwarded-Proto")) == (client, "https")
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await tls_after_header(proxy.https_port, b"PROXY TCP4 bad\r\n", "a.example.com")
            assert len(backend.requests) == 3
    finally:
        await backend.close()
