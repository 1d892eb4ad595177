"""HTTP/2 over TLS chosen by ALPN: H2Downstream takes over an established TLS transport.

The TLS listener (another branch) calls a chooser on each new TLS connection; here a minimal one stands in:
`AlpnChooser` looks at the negotiated ALPN protocol and hands the transport to `h2.take_over` (h2) or to a
`Downstream` (http/1.1), exactly as `proto = H2Downstream(server); transport.set_protocol(proto); ...`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter

import trustme
from h2client import H2Client
from harness import async_test, stack

from pyngress.runtime import h2
from pyngress.runtime.downstream import Downstream
from pyngress.runtime.server import ProxyServer


class AlpnChooser(asyncio.Protocol):
    def __init__(self, server: ProxyServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            h2.take_over(self.server, transport)
        else:
            proto = Downstream(self.server)
            transport.set_protocol(proto)
            proto.connection_made(transport)


async def tls_listener(server: ProxyServer, ca: trustme.CA) -> tuple[asyncio.base_events.Server, int]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.com").configure_cert(ctx)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    listener = await asyncio.get_running_loop().create_server(lambda: AlpnChooser(server), "127.0.0.1", 0,
                                                              ssl=ctx)
    return listener, listener.sockets[0].getsockname()[1]


def client_context(ca: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(alpn)
    return ctx


@async_test
async def test_alpn_h2_over_tls_is_served_by_h2downstream() -> None:
    ca = trustme.CA()
    async with stack(pods=3) as s:
        listener, port = await tls_listener(s.proxy.server, ca)
        try:
            async with await H2Client.connect(port, ssl_context=client_context(ca, ["h2"]),
                                              server_hostname="example.com") as client:
                ids = [client.start("GET", f"/tls/{i}") for i in range(30)]
                responses = await asyncio.gather(*(client.response(i) for i in ids))
                assert Counter(json.loads(r.body)["pod"] for r in responses) == {"pod-0": 10, "pod-1": 10,
                                                                                  "pod-2": 10}
                big = await client.request("POST", "/upload", body=b"z" * 300_000)
                assert json.loads(big.body)["body_bytes"] == 300_000
                assert s.backend.requests[-1].header("x-forwarded-proto") == "https"
            # a client offering only http/1.1 on the same listener gets HTTP/1.1
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(ca, ["http/1.1"]), server_hostname="example.com")
            writer.write(b"GET /one HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 ")
            writer.close()
            await writer.wait_closed()
        finally:
            listener.close()
            await listener.wait_closed()


def _no_verify_h2() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


@async_test
async def test_the_https_listener_serves_h2_by_alpn_with_hsts_and_forwarded_proto() -> None:
    from harness import EchoBackend
    from tls_harness import CA, app, compile_docs, secret, tls_proxy

    pod = await EchoBackend.start("secure-pod")
    try:
        leaf = CA.issue_cert("secure.example.com")
        snap = compile_docs([secret("secure", leaf),
                             *app("secure", ["secure.example.com"], pod.port,
                                  tls=[(["secure.example.com"], "secure")])])
        async with tls_proxy(snap) as proxy:
            async with await H2Client.connect(proxy.https_port, ssl_context=_no_verify_h2(),
                                              server_hostname="secure.example.com") as client:
                resp = await client.request("GET", "/over-h2", host="secure.example.com")
                assert resp.status == 200
                assert (resp.header(b"strict-transport-security") or b"").startswith(b"max-age=31536000")
                assert json.loads(resp.body)["headers"]["x-forwarded-proto"] == "https"
            # h2c on the plain port to a host with TLS: redirected like HTTP/1.1 (ssl-redirect)
            async with await H2Client.connect(proxy.http_port) as plain:
                moved = await plain.request("GET", "/cart?id=7", host="secure.example.com")
                assert moved.status == 308
                assert moved.header(b"location") == b"https://secure.example.com:%d/cart?id=7" % proxy.https_port
                acme = await plain.request("GET", "/.well-known/acme-challenge/x", host="secure.example.com")
                assert acme.status == 200
    finally:
        await pod.close()
