"""`use-proxy-protocol`: read a PROXY protocol header, then hand the connection to a `Downstream`.

Only for listeners whose configuration has `use-proxy-protocol: "true"`; otherwise `ProxyServer` gives the
connection straight to a Downstream and this module costs nothing. Which peers may send the header: those in
proxy-real-ip-cidr, or every peer when it is empty (as ingress-nginx, whose proxy-real-ip-cidr defaults to
0.0.0.0/0). A trusted peer must send a header: a malformed one, or none within
proxy-protocol-header-timeout (5 s; enforced by the server's ticker, through `deadline` and `timed_out`),
closes the connection without a response (there is no HTTP to answer yet). An untrusted peer's connection is
plain HTTP from its first byte: a PROXY header from it is then a malformed request (400), so a client cannot
claim another address by sending one.

The header's source becomes the connection's client address (`Downstream.use_client_address`): X-Real-IP,
X-Forwarded-For, the limits and access lists all see it. A LOCAL / UNKNOWN header (the load balancer's own
health check) keeps the TCP peer.

The HTTPS listener owns raw accepted sockets, and the PROXY header comes before the TLS ClientHello:
`read_header(sock)` peeks at the socket until a whole header is there, then consumes exactly the header's
bytes, so the TLS handshake that follows starts at its first byte. Waiting for more bytes uses SO_RCVLOWAT
(wake us when at least one more byte is there) rather than spinning on bytes already peeked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, cast

from pyngress.policy.cidr import CidrSet, address_int
from pyngress.runtime.downstream import Downstream, as_protocol
from pyngress.runtime.proxy_protocol import MAX_V2_PAYLOAD, V2_HEADER_LENGTH, ProxyProtocolError, parse

if TYPE_CHECKING:
    from pyngress.runtime.server import ProxyServer


class ProxyHeaderReader(asyncio.Protocol):
    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.deadline = 0.0  # loop time after which the ticker closes us (`timed_out`)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        serving = self.server.dataplane.serving
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        trusted = serving.settings.trusted_proxies
        if trusted and not _networks(trusted).contains(address_int(ip)):
            self._hand_over(None, b"")  # not a proxy of ours: plain HTTP
            return
        self.deadline = self.server.now + serving.settings.proxy_protocol_header_timeout
        self.server.handshakes.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            result = parse(self.buffer)
        except ProxyProtocolError:
            self._close()
            return
        if result is not None:
            header, consumed = result
            self.server.handshakes.discard(self)
            self._hand_over(None if header.local else header.source_addr, self.buffer[consumed:])

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.handshakes.discard(self)

    def timed_out(self) -> None:
        self._close()

    def _close(self) -> None:
        self.server.handshakes.discard(self)
        if self.transport is not None:
            self.transport.close()

    def _hand_over(self, client: str | None, rest: bytes) -> None:
        assert self.transport is not None
        downstream = Downstream(self.server)
        self.transport.set_protocol(as_protocol(downstream))
        downstream.connection_made(self.transport)
        if client is not None:
            downstream.use_client_address(client)
        if rest:
            downstream.data_received(rest)


_cache: dict[tuple[str, ...], CidrSet] = {}


def _networks(cidrs: tuple[str, ...]) -> CidrSet:
    """proxy-real-ip-cidr as a CidrSet, built once per distinct list (a reload may change it)."""
    found = _cache.get(cidrs)
    if found is None:
        if len(_cache) > 16:
            _cache.clear()
        found = _cache[cidrs] = CidrSet(cidrs)
    return found


def expects_header(server: ProxyServer, peer_ip: str) -> bool:
    """use-proxy-protocol is on and `peer_ip` may send a header (in proxy-real-ip-cidr, or that is empty)."""
    settings = server.dataplane.serving.settings
    if not settings.use_proxy_protocol:
        return False
    return not settings.trusted_proxies or _networks(settings.trusted_proxies).contains(address_int(peer_ip))


PEEK = V2_HEADER_LENGTH + MAX_V2_PAYLOAD


async def read_header(sock: socket.socket, timeout: float) -> str | bool | None:
    """Consume the PROXY header at the start of a raw accepted socket. Returns the client address it names,
    None for a LOCAL / UNKNOWN header (keep the TCP peer), False when malformed, closed or too slow."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    lowat = 1
    try:
        while await readable(loop, sock, deadline - loop.time()):
            try:
                data = sock.recv(PEEK, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                return False
            if not data:
                return False  # closed before a whole header
            try:
                result = parse(data)
            except ProxyProtocolError:
                return False
            if result is not None:
                header, consumed = result
                sock.recv(consumed)  # already in the socket buffer: exactly the header goes
                return None if header.local else header.source_addr
            lowat = len(data) + 1
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        return False
    finally:
        if lowat != 1:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def readable(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float) -> bool:
    """Wait until `sock` (an accepted socket not yet given to a transport) is readable; False on timeout.
    Shared with the HTTPS listener's ClientHello peek."""
    if timeout <= 0:
        return False
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, _wake, ready)
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
