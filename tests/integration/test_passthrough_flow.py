"""ssl-passthrough and flow control (issue 5): the pod can be told the client's address with a PROXY protocol
header (`pyngress.io/proxy-protocol: v1|v2`), and the Ingress's access lists apply to the relayed connections
by client address. The client connects from 127.0.0.2 so that its address differs from pyngress's own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

from harness import async_test, wait_until
from tls_harness import POD_CA, app, compile_docs, tls_proxy

from pyngress.runtime.proxy_listener import readable
from pyngress.runtime.proxy_protocol import ProxyHeader, ProxyProtocolError, parse

LEAF = POD_CA.issue_cert("secure.example.com")


class ProxyPod:
    """Expects a PROXY header, then TLS with the pod's own certificate; answers with what the header said."""

    def __init__(self) -> None:
        self.headers: list[ProxyHeader] = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        LEAF.configure_cert(self.ctx)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self.listener)
            self.connections += 1
            task = asyncio.create_task(self.serve(sock))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        writer = None
        try:
            data = b""
            while (found := parse(data)) is None:
                assert await readable(loop, sock, 5.0), "no PROXY header"  # wait for bytes without taking them
                data = sock.recv(4096, socket.MSG_PEEK)
            header, consumed = found
            sock.recv(consumed)  # exactly the header: the TLS handshake stays in the socket
            self.headers.append(header)
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=self.ctx)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await reader.readuntil(b"\r\n\r\n")
            body = f"{header.source_addr} {header.source_port}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError, ProxyProtocolError,
                AssertionError):
            sock.close()
        finally:
            if writer is not None:
                writer.close()


@contextlib.asynccontextmanager
async def proxy_pod() -> AsyncIterator[ProxyPod]:
    pod = ProxyPod()
    task = asyncio.create_task(pod.run())
    try:
        yield pod
    finally:
        task.cancel()
        for t in (task, *pod.tasks):
            t.cancel()
        await asyncio.gather(task, *pod.tasks, return_exceptions=True)
        pod.listener.close()


async def get_from(port: int, source: str) -> tuple[str, int]:
    """A TLS request to secure.example.com from `source`: the pod's answer, and our source port."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="secure.example.com", local_addr=(source, 0)), 5)
    try:
        local_port = int(writer.get_extra_info("sockname")[1])
        writer.write(b"GET / HTTP/1.1\r\nHost: secure.example.com\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 5)
        return response.split(b"\r\n\r\n", 1)[1].decode(), local_port
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def passthrough(port: int, **notes: str) -> list[dict[str, object]]:
    return app("secure", ["secure.example.com"], port,
               annotations={"nginx.ingress.kubernetes.io/ssl-passthrough": "true", **notes})


@async_test
async def test_the_pod_is_told_the_client_with_a_proxy_v1_or_v2_header() -> None:
    for version in ("v1", "v2"):
        async with proxy_pod() as pod, \
                tls_proxy(compile_docs(passthrough(pod.port, **{"pyngress.io/proxy-protocol": version}))) as proxy:
            answer, source_port = await get_from(proxy.https_port, "127.0.0.2")
            assert answer == f"127.0.0.2 {source_port}"  # the client, not pyngress (127.0.0.1)
            (header,) = pod.headers
            assert header.dest_port == proxy.https_port


@async_test
async def test_access_lists_apply_to_passthrough_connections() -> None:
    notes = {"pyngress.io/proxy-protocol": "v1",
             "nginx.ingress.kubernetes.io/denylist-source-range": "127.0.0.2/32"}
    async with proxy_pod() as pod, tls_proxy(compile_docs(passthrough(pod.port, **notes))) as proxy:
        refused = False
        try:
            await get_from(proxy.https_port, "127.0.0.2")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            refused = True  # closed before the handshake: nothing relayed
        assert refused
        await wait_until(lambda: proxy.server.flow.refused_access == 1, what="the refusal counted")
        assert pod.connections == 0
        answer, _ = await get_from(proxy.https_port, "127.0.0.3")  # another client passes
        assert answer.startswith("127.0.0.3 ")
