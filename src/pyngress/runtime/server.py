"""One worker's proxy: listeners, the current configuration, the upstream pool, timeouts and draining.

`ProxyServer` owns everything live in a worker. `install(snapshot)` swaps the configuration (see
`runtime.state`); requests in flight keep the objects they already hold, new ones see the new config.

Timeouts are enforced by one ticker per worker rather than a timer per request: the ticker refreshes
`self.now` (the loop's time) every `tick` seconds (a quarter of the smallest timeout, at most 1 s), each
connection stamps its last activity with that value (an attribute copy, no call), and the ticker closes what
is overdue. A timeout therefore fires between `timeout` and `timeout + 2 ticks` after the last activity,
never early: the price of keeping timer work off the per-request path. The ticker also refreshes the cached
Date header.

Health (issue 7, `runtime.health`): the ticker also ends ejections, steps slow-start ramps and enforces the
drain deadline of removed endpoints; `ready` turns False when SIGTERM arrives (before the listeners close).

Draining (SIGTERM): stop accepting, close idle keep-alive connections, let in-flight requests finish (their
responses say `Connection: close`), and after `grace` seconds close whatever is left.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from email.utils import formatdate
from typing import TYPE_CHECKING

from pyngress.balancing import PickContext
from pyngress.model import ProxySettings, Snapshot
from pyngress.observability.recorder import Recorder
from pyngress.runtime.downstream import Downstream, as_protocol
from pyngress.runtime.flow import FlowGate
from pyngress.runtime.h2_upstream import H2UpstreamPool
from pyngress.runtime.health import HealthManager
from pyngress.runtime.l4 import StreamRuntime
from pyngress.runtime.pool import Clock, UpstreamPool
from pyngress.runtime.probe import Prober
from pyngress.runtime.proxy_listener import ProxyHeaderReader
from pyngress.runtime.request_head import request_id_source
from pyngress.runtime.sessions import Session
from pyngress.runtime.state import Dataplane, Serving

if TYPE_CHECKING:
    from pyngress.runtime.https_listener import HttpsListener


def http_date(now: float | None = None) -> bytes:
    return formatdate(now if now is not None else time.time(), usegmt=True).encode()


class ProxyServer:
    def __init__(self, snapshot: Snapshot, *, rng: random.Random | None = None, probing: bool = True) -> None:
        loop = asyncio.get_running_loop()  # construct inside the worker's running loop
        # issue 7: health decides which endpoints the balancers get; see runtime.health
        self.health = HealthManager(loop.time(), snapshot.settings)
        self.health.prepare(snapshot, loop.time())
        self.dataplane = Dataplane(snapshot, rng=rng, select=self.health.endpoints_for)
        self.recorder = Recorder()  # metrics and access log (issue 8)
        self.recorder.health = self.health  # /status and /metrics read endpoint health (issue 7)
        self.recorder.install(self.dataplane.serving)
        self.loop = loop
        self.clock = Clock(self.loop.time())
        self.tick = 1.0
        self.pool = UpstreamPool(self.loop, self.clock)
        self.pool.health = self.health
        self.health.installed(self.dataplane.serving)
        self.health.abort_endpoint = self._abort_endpoint
        self.health.schedule = self.loop.call_soon
        # the process that probes (see runtime.app): this one unless told otherwise
        self.prober: Prober | None = None
        if probing:
            self.prober = Prober(self.health, self.loop)
            self.health.on_targets = self.prober.set_targets
            self.prober.set_targets(self.health.targets)
        # Readiness (issue 7): False from SIGTERM on (`begin_shutdown`, with `draining`), while listeners still
        # accept for shutdown-grace-period so the outer load balancer notices; /readyz then answers 503.
        self.ready = True
        self.connections: set[Downstream] = set()
        # issue 4: connections that are not HTTP/1.1 Downstreams (HTTP/2 connections, WebSocket tunnels)
        self.sessions: set[Session] = set()
        self.h2_upstreams = H2UpstreamPool(self)  # HTTP/2 connections to gRPC pods
        self.draining = False
        self.date = http_date()
        self.request_ids = request_id_source()
        self.no_context = PickContext(now=self.now)
        self.ports: list[int] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._ticker: asyncio.TimerHandle | None = None
        self._all_closed = asyncio.Event()
        self.streams = StreamRuntime(snapshot, rng=rng)  # issue 9 (L4): TCP/UDP listeners follow the snapshot
        self.https: HttpsListener | None = None  # the TLS listener (issue 4, runtime.https_listener), if any
        # flow and access control (issue 5): live limit tables; connections still reading a PROXY header
        self.flow = FlowGate(self)
        self.flow.install(snapshot)
        self.handshakes: set[ProxyHeaderReader] = set()

    @property
    def snapshot(self) -> Snapshot:
        return self.dataplane.serving.snapshot

    def install(self, snapshot: Snapshot) -> Serving:
        """Swap in a new configuration; live state carries over by backend and endpoint key."""
        self.health.prepare(snapshot, self.loop.time())
        serving = self.dataplane.install(snapshot)
        self.health.installed(serving)
        self.pool.retain(self.health.pooled_keys(serving.endpoint_keys))  # issue 7: terminating ones drain
        self.flow.install(snapshot)
        self.recorder.install(serving)
        self.streams.install(snapshot)  # issue 9 (L4)
        # issue 7: tunnels (WebSocket) to a removed pod stay open until worker-shutdown-timeout
        kept = self.health.within_drain(serving.endpoint_keys)
        for session in list(self.sessions):
            session.retain(kept)
        self.h2_upstreams.retain(serving.endpoint_keys)
        if self.https is not None:
            self.https.install(snapshot)  # its certificates: new handshakes use them
        return serving

    async def listen(self, host: str = "0.0.0.0", port: int = 8080, *, reuse_port: bool = False,
                     backlog: int = 2048, sock: socket.socket | None = None) -> int:
        """Start accepting on host:port (port 0 picks one), or on `sock` (already bound and listening: a
        worker's socket that its parent keeps open across worker restarts), and return the bound port."""
        self.loop = asyncio.get_running_loop()
        self.pool.loop = self.loop
        if sock is not None:
            server = await self.loop.create_server(self._accept, sock=sock, backlog=backlog)
        else:
            server = await self.loop.create_server(
                self._accept, host, port, reuse_port=reuse_port or None, backlog=backlog,
                reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()[1]
        self.ports.append(bound)
        self.recorder.listening(host, int(bound))
        if self._ticker is None:
            self._schedule_tick()
        self.streams.start(host, reuse_port)  # issue 9 (L4): streams bind where the first listener does
        return int(bound)

    def _accept(self) -> asyncio.Protocol:
        if self.dataplane.serving.settings.use_proxy_protocol:
            return ProxyHeaderReader(self)  # reads the PROXY header, then hands over to a Downstream
        return as_protocol(Downstream(self))

    def connection_opened(self, conn: Downstream) -> None:
        self.connections.add(conn)
        self.recorder.connection_opened(conn)

    def connection_closed(self, conn: Downstream) -> None:
        self.connections.discard(conn)
        if self.draining and not self.connections and not self.sessions:
            self._all_closed.set()

    def session_opened(self, session: Session) -> None:
        self.sessions.add(session)

    def session_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        if self.draining and not self.connections and not self.sessions:
            self._all_closed.set()

    def _abort_endpoint(self, key: str) -> int:
        """worker-shutdown-timeout after `key` left the configuration: close what still uses it."""
        kept = self.health.within_drain(self.dataplane.serving.endpoint_keys)
        for session in list(self.sessions):
            session.retain(kept)  # its tunnels close now
        return self.pool.abort_endpoint(key)

    def begin_shutdown(self) -> None:
        """SIGTERM (issue 7): readiness fails (`ready`, and `draining`, which /readyz reads) while listeners
        still accept for shutdown-grace-period; every response from now on says `Connection: close`, so
        keep-alive clients reconnect, to another replica once the outer load balancer has noticed. Idle
        connections are left alone until `drain` (closing one a client is about to reuse would fail it)."""
        self.ready = False
        self.draining = True

    async def drain(self, grace: float = 30.0) -> None:
        """Stop accepting, finish in-flight requests for up to `grace` seconds, then close everything."""
        self.draining = True
        self._all_closed.clear()  # set during a shutdown-grace-period when connections came and went
        self.ready = False
        if self.prober is not None:
            self.prober.close()
        streams = self.loop.create_task(self.streams.drain(grace))  # issue 9 (L4): in parallel with HTTP
        started = self.loop.time()
        for server in self._servers:
            server.close()
        if self.https is not None:
            self.https.stop()
        for conn in list(self.connections):
            if not conn.queue and conn.head_started < 0:
                conn.close()
        for session in list(self.sessions):
            session.drain()  # HTTP/2: GOAWAY, then close once the open streams are answered
        if self.connections or self.sessions:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for conn in list(self.connections):
                    conn.abort()
                for session in list(self.sessions):
                    session.abort()
        await streams
        if self.https is not None:  # its HTTP connections drained above; ssl-passthrough relays now
            await self.https.close(max(0.0, grace - (self.loop.time() - started)))
        self.pool.close_idle()
        self.h2_upstreams.close_all()
        if self.prober is not None:
            await self.prober.wait_closed()
        for server in self._servers:
            await server.wait_closed()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.recorder.close()
        for handshake in list(self.handshakes):
            handshake.timed_out()
        await self.flow.close()

    # -- the ticker ------------------------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        s = self.dataplane.serving.settings
        smallest = min(s.proxy_read_timeout, s.proxy_send_timeout, s.keep_alive or 75.0,
                       s.client_header_timeout, s.client_body_timeout, s.proxy_connect_timeout,
                       s.proxy_stream_timeout,  # issue 4: ssl-passthrough relays
                       s.proxy_protocol_header_timeout if s.use_proxy_protocol else 75.0)  # issue 5
        self.tick = max(0.02, min(1.0, smallest / 4))
        self._ticker = self.loop.call_later(self.tick, self._tick)

    @property
    def now(self) -> float:
        return self.clock.now

    def _tick(self) -> None:
        self.clock.now = now = self.loop.time()
        self.no_context.now = now  # the shared context of context-free picks: ewma ages by it
        self.date = http_date()
        settings = self.dataplane.serving.settings
        slack = self.tick  # stamps are up to one tick old: never fire early
        for conn in list(self.connections):
            _check_client(conn, now - slack, settings)
            upstream = conn.queue[0].upstream if conn.queue else None
            if upstream is not None:  # only the first exchange of a connection talks to an upstream
                upstream.check_timeouts(now - slack, settings.proxy_read_timeout, settings.proxy_send_timeout)
        for session in list(self.sessions):
            session.tick(now - slack, settings)
        self.pool.expire(now)
        for handshake in [h for h in self.handshakes if now > h.deadline]:
            handshake.timed_out()
        self.recorder.tick(now)
        self.h2_upstreams.expire(now, settings.upstream_keepalive_timeout)
        if self.https is not None:  # issue 4: idle ssl-passthrough relays, certificates expiring
            self.https.on_tick(now - slack, settings)
        self.health.tick(now)
        self._schedule_tick()


def _check_client(conn: Downstream, now: float, settings: ProxySettings) -> None:
    if conn.head_started >= 0:
        if now - conn.head_started > settings.client_header_timeout:
            conn.refuse(408)
    elif not conn.queue:
        if now - conn.last_activity > settings.keep_alive:
            conn.close()
    elif conn.receiving is not None and now - conn.last_activity > settings.client_body_timeout:
        conn.refuse(408)

