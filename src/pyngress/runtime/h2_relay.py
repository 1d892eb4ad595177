"""A client HTTP/2 stream relayed to a pod's HTTP/2 stream: gRPC (`backend-protocol: GRPC` / `GRPCS`, issue 4).

Both sides are HTTP/2, so nothing is translated: request headers (minus what the proxy owns: hop-by-hop
fields and the forwarded ones it sets itself), DATA in both directions, and the response's trailers (where
gRPC puts `grpc-status` and `grpc-message`) go through as they are, in order, so unary, server-streaming,
client-streaming and bidirectional calls all work. `te: trailers` is kept (gRPC requires it).

Flow control is end to end: bytes from the client are acknowledged to it only once the pod's window has let
them out of our buffer, and bytes from the pod are acknowledged to the pod only while the client's side of
the stream holds no more than `PENDING_LIMIT` unsent. Errors before the response head become HTTP statuses
(502 connect/protocol failure, 504 connect timeout, 503 no endpoint), which gRPC clients read as UNAVAILABLE;
after it, the client stream is reset with the pod's error code. `proxy-read-timeout` bounds the time without
a frame either way on the stream, as ingress-nginx's grpc_read_timeout does.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions

if TYPE_CHECKING:
    from pyngress.model import Endpoint, ProxySettings
    from pyngress.runtime.h2_stream import H2Stream
    from pyngress.runtime.h2_upstream import H2Upstream

GRPC_PROTOCOLS = frozenset({"GRPC", "GRPCS"})
CANCEL = 0x8
INTERNAL_ERROR = 0x2

# fields the proxy owns on the way to the pod: connection-specific ones (never valid in HTTP/2) and the
# forwarded ones it sets itself
_OURS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host",
                   b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-host",
                   b"x-forwarded-port", b"http2-settings"})


def upstream_headers(stream: H2Stream, headers: list[tuple[bytes, bytes]], tls: bool) -> list[tuple[bytes, bytes]]:
    """The request's header list for the pod: pseudo-headers first, then the client's fields, then ours."""
    pseudo: list[tuple[bytes, bytes]] = []
    fields: list[tuple[bytes, bytes]] = []
    authority = b""
    request_id = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":scheme":
                value = b"https" if tls else b"http"
            elif name == b":authority":
                authority = value
            pseudo.append((name, value))
        elif name == b"te":
            if value.strip().lower() == b"trailers":
                fields.append((name, value))
        elif name not in _OURS and not name.startswith(b"proxy-"):
            request_id = request_id or name == b"x-request-id"
            fields.append((name, value))
    peer = stream.connection.peer
    proto = b"https" if stream.connection.tls else b"http"
    ours = [(b"x-forwarded-for", peer.address), (b"x-real-ip", peer.address), (b"x-forwarded-proto", proto),
            (b"x-forwarded-host", authority), (b"x-forwarded-port", peer.port)]
    if not request_id and stream.server.dataplane.serving.settings.generate_request_id:
        ours.append((b"x-request-id", stream.server.request_ids()))
    return [*pseudo, *fields, *ours]


class Relay:
    def __init__(self, stream: H2Stream, endpoint: Endpoint, headers: list[tuple[bytes, bytes]],
                 request_ended: bool) -> None:
        self.stream = stream
        self.endpoint = endpoint
        self.headers = headers
        self.request_ended = request_ended
        self.end_sent = False
        self.response_started = False
        self.done = False
        self.upstream: H2Upstream | None = None
        self.upstream_id = 0
        self.last_activity = stream.server.now
        self._to_upstream: deque[tuple[bytes, int]] = deque()  # (data, flow-controlled size to ack)
        self._request_trailers: list[tuple[bytes, bytes]] | None = None
        self._held_acks = 0  # the pod's bytes not yet acknowledged to it (the client is slow)

    # -- the upstream connection -------------------------------------------------------------------------

    def upstream_ready(self, conn: H2Upstream) -> None:
        if self.done:
            return
        self.upstream = conn
        end = self.request_ended and not self._to_upstream and self._request_trailers is None
        self.upstream_id = conn.open_stream(self, self.headers, end)
        self.end_sent = end
        self.send_upstream_pending()

    def connect_failed(self, status: int) -> None:
        self._fail(status)

    def upstream_lost(self) -> None:
        self.upstream = None
        self._fail(502, INTERNAL_ERROR)

    # -- client -> pod -------------------------------------------------------------------------------------

    def client_data(self, data: bytes, flow_controlled: int) -> None:
        self.last_activity = self.stream.server.now
        self._to_upstream.append((data, flow_controlled))
        self.send_upstream_pending()

    def client_end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.request_ended = True
        self._request_trailers = trailers
        self.send_upstream_pending()

    def client_reset(self) -> None:
        self.done = True
        conn = self.upstream
        if conn is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                conn.conn.reset_stream(self.upstream_id, CANCEL)
            conn.stream_done(self.upstream_id)
            conn.flush()

    def send_upstream_pending(self) -> None:
        conn = self.upstream
        if conn is None or self.done:
            return
        h2conn, sid, acked = conn.conn, self.upstream_id, 0
        queue = self._to_upstream
        try:
            while queue:
                window = min(h2conn.local_flow_control_window(sid), h2conn.max_outbound_frame_size)
                if window <= 0:
                    break
                data, size = queue[0]
                h2conn.send_data(sid, data[:window])
                if window < len(data):
                    queue[0] = (data[window:], size)
                else:
                    queue.popleft()
                    acked += size
            if not queue and self.request_ended and not self.end_sent:
                self.end_sent = True
                if self._request_trailers is not None:
                    h2conn.send_headers(sid, self._request_trailers, end_stream=True)
                else:
                    h2conn.end_stream(sid)
        except h2.exceptions.ProtocolError:
            queue.clear()
        conn.flush()
        if acked:
            self.stream.connection.ack(acked, self.stream.stream_id)
            self.stream.connection.flush()

    # -- pod -> client -------------------------------------------------------------------------------------

    def upstream_headers(self, headers: list[tuple[bytes, bytes]], trailers: bool, ended: bool) -> None:
        self.last_activity = self.stream.server.now
        stream = self.stream
        if trailers:
            stream.trailers = headers
            return
        if ended:  # "trailers-only" (gRPC errors): one HEADERS frame with END_STREAM, relayed as one
            self.response_started = True
            stream.trailers = headers
            self.upstream_ended()
            return
        self.response_started = True
        if not stream.gone:
            try:
                stream.connection.conn.send_headers(stream.stream_id, headers)
            except h2.exceptions.ProtocolError:
                stream.gone = True
            stream.connection.flush()

    def upstream_data(self, data: bytes, flow_controlled: int) -> None:
        self.last_activity = self.stream.server.now
        self._held_acks += flow_controlled
        self.stream.on_body(data)  # sends what the client's window allows; calls client_drained
        self.stream.connection.flush()

    def client_drained(self, below_limit: bool) -> None:
        """The client's side of the stream sent what it could; `below_limit`: little enough is left that the
        pod may send more (its bytes are acknowledged now)."""
        conn = self.upstream
        if self._held_acks and below_limit and conn is not None and not self.done:
            held, self._held_acks = self._held_acks, 0
            conn.conn.acknowledge_received_data(held, self.upstream_id)
            conn.flush()

    def upstream_ended(self) -> None:
        stream = self.stream
        if stream.response_ended:  # already ended by a trailers-only HEADERS frame
            return
        self._finish_upstream()
        stream.response_ended = True
        stream.send_pending()
        stream.connection.flush()

    def upstream_reset(self, code: int) -> None:
        self.upstream = None
        self._fail(502, code)

    def _finish_upstream(self) -> None:
        self.done = True
        conn = self.upstream
        if conn is None:
            return
        if not self.end_sent:  # the pod answered before the client finished sending: stop the rest
            with contextlib.suppress(h2.exceptions.ProtocolError):
                conn.conn.reset_stream(self.upstream_id, CANCEL)
        conn.stream_done(self.upstream_id)
        conn.flush()

    def _fail(self, status: int, code: int = INTERNAL_ERROR) -> None:
        if self.response_started or self.stream.gone:
            self.done = True
            self.stream.close_with(code)
            return
        self._finish_upstream()
        self.stream.answer_generated(status)

    def check_timeout(self, now: float, settings: ProxySettings) -> None:
        if not self.done and now - self.last_activity > settings.proxy_read_timeout:
            self.client_reset()
            if self.response_started:
                self.stream.close_with(CANCEL)
            else:
                self.stream.answer_generated(504)
