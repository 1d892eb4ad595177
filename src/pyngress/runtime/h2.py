"""HTTP/2 from clients: one `H2Downstream` per connection, one `H2Stream` per request (issue 4).

The h2 library is the protocol core (frames, HPACK, stream states, flow-control windows; no I/O); this module
feeds it the bytes read and writes what it wants to send. Each stream is an Exchange of its own, routed and
balanced on its own and sent to the pooled HTTP/1.1 upstream connections like any HTTP/1.1 request, so 100
streams on one client connection spread over the pods (the fix for kube-proxy pinning a whole HTTP/2
connection to one pod). `runtime.h2_stream` does the per-stream translation.

Connections arrive two ways: h2c with prior knowledge on the plain port (`runtime.h2_preface`) and TLS with
ALPN `h2` (the TLS listener calls `take_over`). Both end in `take_over(server, transport, first_bytes)`.

Limits and flow control:
- SETTINGS_MAX_CONCURRENT_STREAMS from the ConfigMap's `http2-max-concurrent-streams` (128, as nginx). A
  client that opens more gets the extra streams refused (REFUSED_STREAM); the others go on.
- The client's request bodies: each stream's window (64 KiB) is handed back only as the upstream takes the
  bytes (`H2Stream.resume`), so a slow pod slows its own client stream, not the others, and memory stays
  bounded by the windows. The connection window is large enough for every stream's window at once.
- Responses: a stream sends what the client's windows allow and keeps the rest; past 64 KiB kept it pauses
  its upstream connection, and while our transport's buffer is full every upstream of the connection pauses.
Draining sends GOAWAY (NO_ERROR, the last stream id seen) written by us: h2 refuses to send anything after its
own GOAWAY, and the streams in flight must still be answered. Streams the client opens after it are refused
(REFUSED_STREAM, safe to retry elsewhere); the connection closes when the last stream is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from pyngress.balancing import PickContext
from pyngress.runtime import h2_fields, request_head
from pyngress.runtime.h2_stream import PAUSE_TRANSPORT, H2Stream

if TYPE_CHECKING:
    from pyngress.model import ProxySettings
    from pyngress.runtime.server import ProxyServer

STREAM_WINDOW = 65535  # the protocol's default initial window: what a stream may send before we take it
CONNECTION_WINDOW = 16 * 1024 * 1024  # enough for many streams' windows at once; bounded by the stream limit
REFUSED_STREAM = 0x7
PROTOCOL_ERROR = 0x1
UNLIMITED = 2**31 - 1


def _local_settings(max_streams: int, max_head_size: int) -> h2.settings.Settings:
    return h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_head_size,
        h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,  # RFC 8441: WebSocket over HTTP/2
    })


def take_over(server: ProxyServer, transport: asyncio.BaseTransport, first_bytes: bytes = b"",
              client_ip: str | None = None) -> H2Downstream:
    """Serve HTTP/2 on an established connection (h2c after the preface check; TLS after ALPN chose h2).
    `client_ip`: the client as the connection's first protocol knew it (a PROXY protocol source, issue 5)."""
    proto = H2Downstream(server)
    transport.set_protocol(proto)
    proto.connection_made(transport)
    if client_ip is not None and client_ip != proto.client_ip:
        proto.use_client_address(client_ip)
    if first_bytes:
        proto.data_received(first_bytes)
    return proto


class H2Downstream(asyncio.Protocol):
    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.peer = request_head.Peer("", 0)
        self.pick_context = PickContext()
        self.streams: dict[int, H2Stream] = {}
        self.max_streams = 128  # SETTINGS_MAX_CONCURRENT_STREAMS as announced (http2-max-concurrent-streams)
        self.requests = 0  # streams accepted so far
        self.last_activity = server.now
        self.tls = False
        self.write_paused = False
        self.draining = False
        self.closed = False
        self._flush_scheduled = False
        self._marked: list[H2Stream] = []
        self._goaway_at = -1  # the last stream id we accept after our GOAWAY; -1 before it
        # Outbound fields come from llhttp-validated upstream responses (lower-cased by us) or from an h2
        # connection to a pod that validated them: h2 need not check them again. The client's fields are
        # checked by `runtime.h2_fields` in one pass instead of h2's chain of generators (its costliest part).
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_outbound_headers=False, normalize_outbound_headers=False,
                                           validate_inbound_headers=False, normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config)

    # -- connection events -------------------------------------------------------------------------------

    def use_client_address(self, ip: str) -> None:
        """The client is `ip`, not the TCP peer: the source of a PROXY protocol header (issue 5)."""
        self.client_ip = ip
        sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
        self.peer = request_head.Peer(ip, sock[1] if sock else 0, self.tls)
        self.pick_context = PickContext(ip)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        sock = transport.get_extra_info("sockname")
        self.tls = transport.get_extra_info("ssl_object") is not None  # HTTP/2 over TLS (ALPN h2)
        self.peer = request_head.Peer(self.client_ip, sock[1] if sock else 0, self.tls)
        self.pick_context = PickContext(self.client_ip)
        settings = self.server.dataplane.serving.settings
        self.max_streams = settings.http2_max_concurrent_streams
        self.conn.local_settings = _local_settings(self.max_streams, settings.max_head_size)
        self.conn.initiate_connection()  # announces max_streams
        # h2 would enforce the limit as a connection error, ending every stream of a client that opens one
        # too many; we refuse just that stream (RFC 9113 5.1.2) in `_request`, so h2 is given no limit.
        self.conn.local_settings = _local_settings(UNLIMITED, settings.max_head_size)
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.server.session_opened(self)
        self.flush_now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._streams_gone()
        self.server.session_closed(self)

    def _streams_gone(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.reset_by_client()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.server.now
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush_now()  # h2 has queued its GOAWAY with the error code
            self.close()
            return
        for event in events:
            self._handle(event)
        self.flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_data(event.data or b"", event.flow_controlled_length or 0)
            else:
                self.ack(event.flow_controlled_length or 0, event.stream_id or 0)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.reset_by_client()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in list(self.streams.values()):
                stream.send_pending()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                pass
            elif h2_fields.trailers_malformed(event.headers or []):
                self.streams.pop(stream.stream_id, None)
                stream.reset_by_client()  # as if reset: its upstream side is abandoned
                self.conn.reset_stream(stream.stream_id, PROTOCOL_ERROR)
            else:
                stream.on_trailers(event.headers or [])
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._streams_gone()  # h2 sends nothing more after a GOAWAY from the client
            self.close()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        headers = event.headers or []
        if h2_fields.request_malformed(headers):  # RFC 9113 8.1.1: a stream error, not a connection error
            self.conn.reset_stream(stream_id, PROTOCOL_ERROR)
            return
        if (self._goaway_at >= 0 and stream_id > self._goaway_at) or len(self.streams) >= self.max_streams:
            # opened after our GOAWAY, or over the announced limit: refused, so safe to retry
            self.conn.reset_stream(stream_id, REFUSED_STREAM)
            return
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        self.requests += 1
        stream.on_request(headers, event.stream_ended is not None)
        if self.requests >= self.server.dataplane.serving.settings.keep_alive_requests:
            self.drain(shutdown=False)  # keep-alive-requests, as nginx applies it to HTTP/2: GOAWAY after it

    def ack(self, size: int, stream_id: int) -> None:
        if size:
            self.conn.acknowledge_received_data(size, stream_id)

    def stream_done(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        if self.draining and not self.streams:
            self.close()

    def flush(self) -> None:
        """Write what h2 has queued, once per loop iteration: every upstream that answers in this iteration
        adds its frames first, so many streams share one write (one syscall)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.server.loop.call_soon(self.flush_now)

    def mark(self, stream: H2Stream) -> None:
        """`stream` has response bytes to send: it sends them at the next flush."""
        if not stream.marked:
            stream.marked = True
            self._marked.append(stream)
            self.flush()

    def flush_now(self) -> None:
        self._flush_scheduled = False
        marked, self._marked = self._marked, []
        for stream in marked:
            stream.marked = False
            stream.send_pending()
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    # -- backpressure from our own transport -------------------------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams.values():
            stream.pause_upstream(PAUSE_TRANSPORT)

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.resume_upstream(PAUSE_TRANSPORT)

    # -- the server's Session interface ------------------------------------------------------------------

    def tick(self, now: float, settings: ProxySettings) -> None:
        for stream in list(self.streams.values()):
            stream.check_timeouts(now, settings)
        if not self.streams and now - self.last_activity > settings.keep_alive:
            self.drain()  # idle: GOAWAY and close, as nginx's keepalive_timeout does for HTTP/2
        self.flush()

    def retain(self, endpoint_keys: Collection[str]) -> None:
        # each stream picks its endpoint with the configuration of the moment it arrives; a WebSocket stream
        # (RFC 8441) to a pod that left worker-shutdown-timeout ago is closed with Going Away (issue 7)
        for stream in list(self.streams.values()):
            if stream.pod is not None and stream.pod.endpoint_key not in endpoint_keys:
                stream.pod.going_away()

    def drain(self, shutdown: bool = True) -> None:
        """GOAWAY, then close once the open streams are done. `shutdown` (the server's drain, not a
        keep-alive limit): WebSocket streams are told to close too (issue 7, `h2_tunnel.PodSide.going_away`)."""
        if shutdown:
            for stream in list(self.streams.values()):
                if stream.pod is not None:
                    stream.pod.going_away()
        if self.draining or self.transport is None:
            return
        self.draining = True
        self._goaway_at = self.conn.highest_inbound_stream_id
        self.flush_now()
        self.transport.write(GoAwayFrame(0, last_stream_id=self._goaway_at, error_code=0).serialize())
        if not self.streams:
            self.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush_now()
            self.closed = True
            self.transport.close()
