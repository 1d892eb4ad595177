"""One worker's layer 4 services: listeners reconciled with each Snapshot, balancers, timeouts, draining.

`ProxyServer` calls in here at three points (its only knowledge of L4): `install(snapshot)` on every reload,
`start(host, reuse_port)` when it starts listening (nothing listens before: the HTTP listener's address is
the one streams bind to), and `drain(grace)`.

Reconciling (`_reconcile`, level-triggered: it compares what should listen with what does):
- a listener per `StreamService.listen_key` ("tcp/9000", "udp/5353"). A new key binds a socket at once
  (synchronously, so a bind error is logged with the reload that caused it) and starts serving it; a key
  that is gone closes its listener (its established TCP connections run on until they end or go idle, as
  nginx's old workers finish theirs after a reload; UDP flows end with their listening socket, which their
  replies need); a key that stays keeps
  its socket and its connections, and only gets the new `StreamConfig` (new connections use it).
- a listener that could not bind is retried at the next reload while its service is still there.
- balancers are live state, kept across reloads by `StreamService.balancer_key` and told the new endpoints
  with `update`; connection counts per endpoint (least_conn) live in one `EndpointStatsRegistry`.

Workers (`--workers N`): each worker binds every TCP and UDP listener with SO_REUSEPORT. For TCP the kernel
spreads connections over the workers' sockets. For UDP, Linux picks the socket by a hash of the datagram's
4-tuple (source address and port, destination address and port), so every datagram of one client lands on
the same worker, the one holding its flow (tests/integration/test_l4_udp.py shows it on this kernel). The
hash changes when a worker's socket is added or removed, so a worker restart may move clients to another
worker, where they get a new flow (and maybe another pod): the same as a conntrack flush.

The ticker (a `call_later` chain of its own; ticks of a quarter of the smallest timeout, at most 1 s) closes
idle TCP connections (`proxy-stream-timeout`), connections still waiting for their PROXY header
(`proxy-protocol-header-timeout`), connect attempts past `proxy-connect-timeout` (cancelled, so the
connection tries its next endpoint), and idle UDP flows (`udp-flow-timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket

from pyngress.balancing import Balancer, EndpointStatsRegistry
from pyngress.balancing.factory import make_balancer
from pyngress.model import TCP, ProxySettings, Snapshot, StreamService
from pyngress.observability import events as metrics
from pyngress.runtime.l4.config import StreamConfig
from pyngress.runtime.l4.tcp import CONNECTING, HEADER, TcpClient
from pyngress.runtime.l4.udp import UdpListener

log = logging.getLogger("pyngress.l4")
BACKLOG = 2048


class TcpListener:
    """A listening TCP socket and the config its new connections read."""

    def __init__(self, runtime: StreamRuntime, config: StreamConfig, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock
        self.server: asyncio.base_events.Server | None = None
        self.starting: asyncio.Task[None] | None = None  # `serve`, until it has run
        self._runtime = runtime

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: TcpClient(self._runtime, self.config), sock=self.sock)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            return
        if self.starting is not None:
            self.starting.cancel()  # removed before it started serving: the task must not use a closed socket
        self.sock.close()


class UdpSocketListener:
    """A bound UDP socket and its `UdpListener` protocol (the flow table)."""

    def __init__(self, runtime: StreamRuntime, config: StreamConfig, sock: socket.socket) -> None:
        self.protocol = UdpListener(runtime, config)
        self.sock = sock
        self.starting: asyncio.Task[None] | None = None  # `serve`, until it has run

    @property
    def config(self) -> StreamConfig:
        return self.protocol.config

    @config.setter
    def config(self, value: StreamConfig) -> None:
        self.protocol.config = value

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.protocol, sock=self.sock)

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.close()
            return
        if self.starting is not None:
            self.starting.cancel()
        self.sock.close()


Listener = TcpListener | UdpSocketListener


class StreamRuntime:
    def __init__(self, snapshot: Snapshot, *, rng: random.Random | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        self.stats = EndpointStatsRegistry()  # connections (TCP) and flows (UDP) in flight per endpoint
        self.listeners: dict[str, Listener] = {}  # by StreamService.listen_key
        self.failed: dict[str, str] = {}  # listen key -> why it could not bind (retried at the next reload)
        self.connections: set[TcpClient] = set()
        self._snapshot = snapshot
        self._rng = rng or random.Random()
        self._balancers: dict[str, Balancer] = {}
        self._host: str | None = None  # set by start(): nothing listens before the proxy does
        self._reuse_port = False
        self._draining = False
        self._starting: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self._all_closed = asyncio.Event()

    # -- the three hooks ---------------------------------------------------------------------------

    def start(self, host: str, reuse_port: bool) -> None:
        if self._host is None:
            self._host, self._reuse_port = host, reuse_port
            self._reconcile()

    def install(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        if self._host is not None and not self._draining:
            self._reconcile()

    async def drain(self, grace: float) -> None:
        """Stop accepting; let TCP connections finish for up to `grace` seconds, then reset them."""
        self._draining = True
        await self.settled()
        listeners, self.listeners = self.listeners, {}
        for listener in listeners.values():
            listener.close()
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace)
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for _ in range(2):  # let the transports' close callbacks run
            await asyncio.sleep(0)

    async def settled(self) -> None:
        """Wait until every listener opened so far is serving (tests; drain)."""
        while self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

    # -- connections report here -------------------------------------------------------------------

    def tcp_opened(self, conn: TcpClient) -> None:
        self.connections.add(conn)
        metrics.stream_accepted(conn.config.service.listen_key)  # issue 8: connections per listener

    def tcp_closed(self, conn: TcpClient) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    # -- reconciling -------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        wanted = {s.listen_key: s for s in self._snapshot.streams}
        settings = self._snapshot.settings
        configs = self._configs(settings)
        for key in [k for k in self.listeners if k not in wanted]:
            log.info("stream %s removed: closing its listener", key)
            self.listeners.pop(key).close()
        self.failed = {k: v for k, v in self.failed.items() if k in wanted}
        for key, config in configs.items():
            listener = self.listeners.get(key)
            if listener is not None:
                listener.config = config
            else:
                self._open(config)
        if self._ticker is None and self.listeners:
            self._schedule_tick()

    def _configs(self, settings: ProxySettings) -> dict[str, StreamConfig]:
        balancers: dict[str, Balancer] = {}
        configs: dict[str, StreamConfig] = {}
        for stream in self._snapshot.streams:
            key, endpoints = stream.balancer_key, stream.backend.endpoints
            balancer = self._balancers.get(key)
            if balancer is None:
                balancer = make_balancer(stream.balance, stream.affinity, endpoints, self._rng, self.stats)
            else:
                balancer.update(endpoints)
            balancers[key] = balancer
            configs[stream.listen_key] = StreamConfig(stream, balancer, settings)
        self._balancers = balancers
        self.stats.retain({e.key for s in self._snapshot.streams for e in s.backend.endpoints})
        return configs

    def _open(self, config: StreamConfig) -> None:
        service = config.service
        assert self._host is not None
        try:
            sock = bind(service, self._host, self._reuse_port)
        except OSError as exc:
            self.failed[service.listen_key] = exc.strerror or str(exc)
            log.error("stream %s: cannot listen on %s:%d: %s", service.listen_key, self._host, service.port,
                      exc.strerror or exc)
            return
        listener: Listener = (TcpListener if service.protocol == TCP else UdpSocketListener)(self, config, sock)
        self.listeners[service.listen_key] = listener
        self.failed.pop(service.listen_key, None)
        listener.starting = task = self.loop.create_task(listener.serve())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        log.info("stream %s serving %s (%s, %d endpoints)", service.listen_key, service.backend.key,
                 service.origin, len(service.backend.endpoints))

    # -- the ticker --------------------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        s = self._snapshot.settings
        smallest = min(s.proxy_stream_timeout, s.proxy_protocol_header_timeout, s.udp_flow_timeout,
                       s.proxy_connect_timeout)
        self._ticker = self.loop.call_later(max(0.02, min(1.0, smallest / 4)), self._tick)

    def _tick(self) -> None:
        self.now = now = self.loop.time()
        settings = self._snapshot.settings
        for conn in list(self.connections):
            if conn.state == HEADER:  # the PROXY header must be complete this long after the accept
                if now - conn.idle_since > settings.proxy_protocol_header_timeout:
                    conn.abort()
            elif conn.state == CONNECTING:
                if now > conn.connect_deadline:
                    conn.expire_connect()
            elif conn.seen:
                conn.seen, conn.idle_since = False, now
            elif now - conn.idle_since > settings.proxy_stream_timeout:
                conn.close()
        for listener in list(self.listeners.values()):
            if isinstance(listener, UdpSocketListener):
                listener.protocol.expire(now, settings.udp_flow_timeout)
        self._schedule_tick()


def bind(service: StreamService, host: str, reuse_port: bool) -> socket.socket:
    """A bound (and for TCP, listening) non-blocking socket for `service` on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if service.protocol == TCP else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, service.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
