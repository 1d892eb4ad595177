"""HTTP/2 connections to pods, for `backend-protocol: GRPC` (h2c) and `GRPCS` (h2 over TLS) (issue 4).

gRPC needs HTTP/2 end to end: its status travels in trailers, and streaming calls keep a stream open in both
directions. A stream from a client on such a route is relayed stream to stream (`runtime.h2_relay`), not
turned into an HTTP/1.1 exchange.

`H2UpstreamPool` keeps one multiplexed connection per endpoint (a second one only when the first is full at
the pod's SETTINGS_MAX_CONCURRENT_STREAMS, or after a GOAWAY). A connection with no stream left for
`upstream-keepalive-timeout` is closed by the ticker; connections to endpoints a reload removed are closed
once idle. Connecting is the only step that needs a task; relays waiting for it are queued on the connection.
GRPCS follows the route's `proxy-ssl-*` annotations as HTTPS does (`UpstreamTLS`: not verified unless
`proxy-ssl-verify`, as ingress-nginx), and offers ALPN h2. Plain and TLS connections to one pod are pooled
apart.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from pyngress.model import UpstreamTLS
from pyngress.runtime import tls_contexts

if TYPE_CHECKING:
    from pyngress.model import Endpoint
    from pyngress.runtime.h2_relay import Relay
    from pyngress.runtime.server import ProxyServer

WINDOW = 1024 * 1024  # per stream and connection, towards the pod: a pod's response is read in big bites


class H2Upstream(asyncio.Protocol):
    def __init__(self, pool: H2UpstreamPool, endpoint: Endpoint, key: str) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.relays: dict[int, Relay] = {}
        self.waiting: list[Relay] = []  # relays that asked for a stream before the connection was up
        self.usable = True  # False after a GOAWAY from the pod, or once lost
        self.idle_since = pool.server.now

    @property
    def full(self) -> bool:
        return len(self.relays) + len(self.waiting) >= self.conn.remote_settings.max_concurrent_streams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.conn.increment_flow_control_window(WINDOW)
        waiting, self.waiting = self.waiting, []
        for relay in waiting:
            relay.upstream_ready(self)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.usable = False
        self.pool.forget(self)
        for relay in [*self.waiting, *self.relays.values()]:
            relay.upstream_lost()
        self.waiting.clear()
        self.relays.clear()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.close()
            return
        for event in events:
            self._handle(event)
        self.flush()

    def _handle(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        relay = self.relays.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            if relay is not None:
                trailers = isinstance(event, h2.events.TrailersReceived)
                relay.upstream_headers(list(event.headers or []), trailers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            if relay is not None:
                relay.upstream_data(event.data or b"", event.flow_controlled_length or 0)
            elif event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id or 0)
        elif isinstance(event, h2.events.StreamEnded):
            if relay is not None:
                relay.upstream_ended()
        elif isinstance(event, h2.events.StreamReset):
            relay = self.relays.pop(stream_id or 0, None)
            if relay is not None:
                relay.upstream_reset(int(event.error_code or 0))
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for each in list(self.relays.values()):
                each.send_upstream_pending()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.usable = False  # GOAWAY: streams up to its last id go on; new ones open another connection
            last = event.last_stream_id or 0
            for sid in [s for s in self.relays if s > last]:
                self.relays.pop(sid).upstream_lost(failure=False)  # unprocessed: no health verdict (issue 7)
            self.pool.forget(self)

    def open_stream(self, relay: Relay, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.relays[stream_id] = relay
        return stream_id

    def stream_done(self, stream_id: int) -> None:
        self.relays.pop(stream_id, None)
        if not self.relays:
            self.idle_since = self.pool.server.now
            if not self.usable:
                self.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


class H2UpstreamPool:
    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self._conns: dict[str, list[H2Upstream]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls: dict[UpstreamTLS, ssl.SSLContext] = {}

    def acquire(self, endpoint: Endpoint, relay: Relay, tls: UpstreamTLS | None) -> None:
        """Give `relay` a connection to `endpoint` (over TLS with `tls`): now if one is up, else once it is."""
        key = endpoint.key if tls is None else endpoint.key + tls.pool_suffix
        for conn in self._conns.get(key, ()):
            if conn.usable and not conn.full:
                if conn.transport is None:
                    conn.waiting.append(relay)
                else:
                    relay.upstream_ready(conn)
                return
        conn = H2Upstream(self, endpoint, key)
        conn.waiting.append(relay)
        self._conns.setdefault(key, []).append(conn)
        task = self.server.loop.create_task(self._connect(conn, endpoint, tls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: H2Upstream, endpoint: Endpoint, tls: UpstreamTLS | None) -> None:
        settings = self.server.dataplane.serving.settings
        try:
            await asyncio.wait_for(self.server.loop.create_connection(
                lambda: conn, endpoint.address, endpoint.port,
                ssl=self._client_tls(tls) if tls is not None else None,
                server_hostname=tls_contexts.upstream_server_hostname(tls) if tls is not None else None),
                settings.proxy_connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.server.health.connect_failed(endpoint.key)  # issue 7: passive health, as HTTP/1.1's pool
            self.forget(conn)
            waiting, conn.waiting = conn.waiting, []
            for relay in waiting:
                relay.connect_failed(504 if isinstance(exc, TimeoutError) else 502)

    def _client_tls(self, spec: UpstreamTLS) -> ssl.SSLContext:
        """HTTPS's client context for `spec` (verification, CA, client certificate), but offering h2: a fresh
        one (the HTTPS pool's are shared and offer http/1.1), made once per spec."""
        ctx = self._tls.get(spec)
        if ctx is None:
            ctx = self._tls[spec] = tls_contexts.upstream_context.__wrapped__(spec)
            ctx.set_alpn_protocols(["h2"])
        return ctx

    def forget(self, conn: H2Upstream) -> None:
        conns = self._conns.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def expire(self, now: float, timeout: float) -> None:
        for conns in list(self._conns.values()):
            for conn in [c for c in conns if not c.relays and not c.waiting and now - c.idle_since > timeout]:
                conn.close()

    def retain(self, keys: Collection[str]) -> None:
        for key, conns in list(self._conns.items()):
            if key.partition("#")[0] not in keys:  # the endpoint part of the pool key
                for conn in list(conns):
                    conn.usable = False  # no new streams; closed when its last stream ends
                    if not conn.relays:
                        conn.close()

    def close_all(self) -> None:
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.close()
        self._conns.clear()
