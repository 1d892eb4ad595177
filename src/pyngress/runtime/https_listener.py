"""The HTTPS listener (issue 4): TLS termination with SNI, ALPN, and ssl-passthrough on the same port.

Theory of operation. The listener owns its accept loop instead of `create_server(ssl=...)`, so that each
accepted connection can be routed by what the client asks for *before* any TLS is done:

1. accept; read the current `TLSServing` (the contexts of the newest install) once;
2. if no served Ingress uses ssl-passthrough (the usual case), go straight to 3. Otherwise peek at the
   ClientHello (MSG_PEEK: nothing is consumed) until `client_hello.parse_client_hello` can answer, waiting
   with SO_RCVLOWAT set to the bytes it still needs. A server name that is a passthrough host: the raw
   connection is relayed to that host's backend (`relay`), and the client talks TLS with the pod itself.
3. terminate: `loop.connect_accepted_socket(..., ssl=default_context)`; the default context's SNI callback
   switches to the certificate for the name (`tls_contexts`). After the handshake, `protocol_for_alpn`
   picks the protocol by the ALPN result and the `_AlpnSwitch` placeholder hands the transport to it.

Whether to peek is decided per connection from the current install, so turning passthrough on or off is an
ordinary reload: the listening socket is never re-created. `bench/tls.py --peek` compares the two paths:
on the loaded 2-core development machine handshakes/s were too noisy to tell apart, but the CPU per
handshake was about 10 % higher with peeking (user 406-479 µs against 370-417 µs, kernel +20 µs: one more
wakeup, recv and setsockopt), so the common case, no passthrough anywhere, skips the peek.

The server's ticker calls `on_tick`: ssl-passthrough relays idle for `proxy-stream-timeout` are closed
(`relay.expire_idle`), and once a minute the served certificates are compared with the wall clock: one that
expired while served is logged once (`warn_expired`) and kept, as nginx keeps the certificate it loaded.

The handshake runs in a task per connection (asyncio's API awaits it); the task ends when the handshake
does. The timeouts: the ClientHello must arrive and the handshake finish within `client-header-timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING

from pyngress.observability import events
from pyngress.runtime import proxy_listener
from pyngress.runtime.client_hello import MAX_HELLO, ClientHello, Incomplete, Parsed, parse_client_hello
from pyngress.runtime.downstream import Downstream, as_protocol
from pyngress.runtime.h2 import H2Downstream
from pyngress.runtime.relay import Relay, expire_idle
from pyngress.runtime.tls_contexts import TLSContexts, TLSServing

if TYPE_CHECKING:
    from pyngress.model import ProxySettings, Route, Snapshot, TLSConfig
    from pyngress.runtime.server import ProxyServer

log = logging.getLogger("pyngress")
EXPIRY_CHECK_EVERY = 60.0  # seconds between two looks at the served certificates' expiry
PEEK_SIZE = MAX_HELLO + 64
ACCEPT_BATCH = 64  # connections accepted per wakeup at most


def protocol_for_alpn(name: str | None, server: ProxyServer) -> asyncio.Protocol:
    """The protocol serving a TLS connection whose handshake chose ALPN protocol `name` (None: no ALPN).

    "h2" is served by `runtime.h2.H2Downstream` (HTTP/2, issue 4), anything else as HTTP/1.1.
    """
    if name == "h2":
        return H2Downstream(server)
    conn = Downstream(server)
    conn.https = True
    return as_protocol(conn)


class _AlpnSwitch(asyncio.BufferedProtocol):
    """The protocol uvloop's TLS transport talks to. Made before the handshake (asyncio wants one then); at
    `connection_made` it creates the protocol ALPN chose and from then on forwards to it.

    Why it stays in between instead of handing the transport over with `set_protocol`: it is a
    BufferedProtocol, and uvloop's SSLProtocol decrypts straight into a BufferedProtocol's buffer. For a
    plain Protocol it calls `SSLObject.read(256 KiB)` for every record, which allocates a 256 KiB bytes
    object and shrinks it (measured: see docs/tls.md, "Performance"). Here the buffer is one per worker
    (`_READ_BUFFER`), reused: each chunk is handed on as bytes before uvloop asks for the buffer again.
    """

    __slots__ = ("client", "conn", "server")

    def __init__(self, server: ProxyServer, client: str | None = None) -> None:
        self.server = server
        self.conn: asyncio.Protocol | None = None
        self.client = client  # the address a PROXY protocol header named (issue 5), else None: the TCP peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        name = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        conn = protocol_for_alpn(name, self.server)
        if isinstance(conn, asyncio.BufferedProtocol):  # it lends its own buffer: step aside
            transport.set_protocol(conn)
        else:
            self.conn = conn
        conn.connection_made(transport)
        if self.client is not None and isinstance(conn, (Downstream, H2Downstream)):
            conn.use_client_address(self.client)  # issue 5: the PROXY protocol header's source

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.conn is not None:
            self.conn.data_received(bytes(_READ_VIEW[:nbytes]))

    def eof_received(self) -> bool | None:
        return self.conn.eof_received() if self.conn is not None else None

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:  # else lost before connection_made: nothing was started
            self.conn.connection_lost(exc)


_READ_SIZE = 64 * 1024  # as uvloop's default read size for plain TCP
_READ_BUFFER = bytearray(_READ_SIZE)
_READ_VIEW = memoryview(_READ_BUFFER)


class HttpsListener:
    """One worker's HTTPS port. `ProxyServer.install` calls `install`; `ProxyServer.drain` calls `stop`/`close`."""

    def __init__(self, server: ProxyServer, contexts: TLSContexts, redirect_port: int = 0) -> None:
        self.server = server
        self.contexts = contexts
        self.tls: TLSServing = contexts.build(server.snapshot)
        self.port = 0
        self.redirect_port = redirect_port  # 0: the port we listen on
        self.redirect_suffix = b""  # ":8443" in redirects to this listener; b"" for 443
        self.relays: set[Relay] = set()
        self._sock: socket.socket | None = None
        self._next_expiry_check = 0.0
        self.expired: set[str] = set()  # fingerprints of served certificates already logged as expired
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self, snapshot: Snapshot) -> None:
        try:
            self.tls = self.contexts.build(snapshot)
        except Exception:  # a bug or the OS (memfd): the routes are swapped already; keep the old certificates
            log.exception("TLS contexts of configuration version %d not built; keeping the previous ones",
                          snapshot.version)

    async def listen(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048,
                     sock: socket.socket | None = None) -> int:
        """`sock`: already bound and listening (issue 7: a worker's socket its parent keeps open)."""
        if sock is None:
            sock = self._bind(host, port, reuse_port, backlog)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        redirect = self.redirect_port or self.port
        self.redirect_suffix = b"" if redirect == 443 else b":%d" % redirect
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_acceptable)
        return self.port

    @staticmethod
    def _bind(host: str, port: int, reuse_port: bool, backlog: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server: "::" is IPv6 only
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def on_tick(self, now: float, settings: ProxySettings) -> None:
        """The server's ticker (`now`: its loop time, one tick late): idle relays; expiry once a minute."""
        expire_idle(self.relays, now, settings.proxy_stream_timeout)
        if now >= self._next_expiry_check:
            self._next_expiry_check = now + EXPIRY_CHECK_EVERY
            self.expired = warn_expired(self.server.snapshot.tls, time.time(), self.expired)

    def _on_acceptable(self) -> None:
        """The listening socket is readable: accept what is waiting, up to ACCEPT_BATCH (others get a turn).
        A reader callback rather than a sock_accept() per connection: no future, no reader churn."""
        listening = self._sock
        if listening is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the socket stays readable, so pause instead of spinning
                log.warning("https accept failed: %s; pausing accepts for 0.1 s", exc)
                loop.remove_reader(listening.fileno())
                loop.call_later(0.1, self._resume_accepting)
                return
            sock.setblocking(False)
            self.server.recorder.accepted_on(self.port)  # metrics (issue 8)
            tls = self.tls
            if self.server.dataplane.serving.settings.use_proxy_protocol:  # issue 5: a PROXY header first
                work = self._proxy_header_then_serve(sock, tls)
            else:
                work = self._peek_then_serve(sock, tls) if tls.passthrough else self._terminate(sock, tls)
            task = loop.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume_accepting(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_acceptable)

    async def _proxy_header_then_serve(self, sock: socket.socket, tls: TLSServing) -> None:
        """use-proxy-protocol (issue 5, runtime.proxy_listener): a trusted peer's PROXY header, then TLS."""
        client = None
        with contextlib.suppress(OSError):
            peer = sock.getpeername()
            if proxy_listener.expects_header(self.server, peer[0]):
                timeout = self.server.dataplane.serving.settings.proxy_protocol_header_timeout
                found = await proxy_listener.read_header(sock, timeout)
                if found is False:
                    sock.close()  # malformed, closed or too slow: as on the HTTP port, no answer
                    return
                client = found if isinstance(found, str) else None
        if tls.passthrough:
            await self._peek_then_serve(sock, tls, client)
        else:
            await self._terminate(sock, tls, client)

    async def _terminate(self, sock: socket.socket, tls: TLSServing, client: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.server.dataplane.serving.settings.client_header_timeout
        try:
            await loop.connect_accepted_socket(lambda: _AlpnSwitch(self.server, client), sock, ssl=tls.default,
                                               ssl_handshake_timeout=timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("TLS handshake failed: %s", exc)
            events.tls_handshake(ok=False, reason=handshake_failure(exc))  # metrics (issue 8)
            sock.close()
        else:
            events.tls_handshake(ok=True)

    async def _peek_then_serve(self, sock: socket.socket, tls: TLSServing, client: str | None = None) -> None:
        hello = await peek_client_hello(sock, self.server.dataplane.serving.settings.client_header_timeout)
        if hello is None:
            sock.close()
            return
        route = tls.passthrough_route(hello.server_name) if isinstance(hello, ClientHello) else None
        if route is None:
            await self._terminate(sock, tls, client)
        else:
            await self._relay(sock, route)

    async def _relay(self, sock: socket.socket, route: Route) -> None:
        serving = self.server.dataplane.serving
        balancer = serving.balancers.get(route.balancer_key)
        endpoint = balancer.pick(self.server.no_context) if balancer is not None else None
        if endpoint is None:
            sock.close()  # no pod: all a TLS client can be told without a certificate of ours
            return
        relay = Relay(self.relays.discard)
        self.relays.add(relay)
        try:
            await relay.start(sock, endpoint, serving.settings.proxy_connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.debug("ssl-passthrough to %s failed: %s", endpoint.key, exc)
            relay.close()
            sock.close()

    def stop(self) -> None:
        """Stop accepting (drain)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    async def close(self, grace: float) -> None:
        """After the HTTP connections have drained: wait up to `grace` for relays, then cut what is left."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        deadline = asyncio.get_running_loop().time() + grace
        while self.relays and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for relay in list(self.relays):
            relay.abort()


async def peek_client_hello(sock: socket.socket, timeout: float) -> Parsed | None:
    """Wait until the ClientHello can be parsed, consuming nothing. None: closed or timed out first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen, lowat = 0, 1
    try:
        while True:
            if not await proxy_listener.readable(loop, sock, deadline - loop.time()):
                return None
            try:
                data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not data:
                return None
            parsed = parse_client_hello(data)
            if not isinstance(parsed, Incomplete):
                return parsed
            if len(data) == seen:  # woken without new bytes (SO_RCVLOWAT not honoured): do not spin
                await asyncio.sleep(0.001)
            seen = len(data)
            lowat = min(parsed.needed, PEEK_SIZE)
            with contextlib.suppress(OSError):  # wake us only when the whole record is there
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
    finally:
        if lowat != 1:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def handshake_failure(exc: BaseException) -> str:
    """A bounded label for a failed handshake: OpenSSL's reason (unknown_ca, wrong_version_number...), else
    the kind of error."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    reason = getattr(exc, "reason", None)
    return str(reason).lower() if reason else type(exc).__name__.lower()


def warn_expired(tls: TLSConfig, wall_now: float, already: set[str]) -> set[str]:
    """Log, once per certificate, a served certificate that has expired since it was loaded; it is still served
    (as nginx serves the certificate it loaded) until a reload judges it and its hosts get the default one.
    Returns the fingerprints of the expired certificates."""
    expired = set()
    for cert in tls.certificates.values():
        if cert.not_after < wall_now:
            expired.add(cert.fingerprint)
            if cert.fingerprint not in already:
                hosts = sorted(h for h, secret in tls.hosts.items() if secret == cert.secret)
                log.warning("Secret %s: the certificate expired at %s UTC and is still served (%s) until the next "
                            "reload, which gives its hosts the default certificate", cert.secret,
                            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(cert.not_after)),
                            ", ".join(hosts) or "the default certificate")
    return expired


async def listen_https(server: ProxyServer, host: str, port: int, *, contexts: TLSContexts,
                       reuse_port: bool = False, redirect_port: int = 0, sock: socket.socket | None = None) -> int:
    """Start the HTTPS listener of `server` (after `server.listen`, which starts the ticker); returns the port."""
    listener = HttpsListener(server, contexts, redirect_port)
    bound = await listener.listen(host, port, reuse_port=reuse_port, sock=sock)
    server.https = listener
    server.recorder.listening(host, bound)  # connections counted per listener (issue 8)
    return bound


__all__ = ["HttpsListener", "listen_https", "peek_client_hello", "protocol_for_alpn"]
