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

Passive health (issue 7) sees gRPC pods as it sees HTTP/1.1 ones: each call's outcome is judged once. A
failure is a 5xx `:status`, a final `grpc-status: 14` (UNAVAILABLE: the pod says it cannot serve, gRPC's 503),
the pod's connection lost or the stream reset by the pod before the call ended; a refused or timed-out
connect is counted by the pool (`H2UpstreamPool._connect`). Anything else is a success. Other gRPC statuses
(NOT_FOUND, INTERNAL...) are the application's answers and do not count against the pod.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions

from pyngress.runtime import http1
from pyngress.runtime.request_head import rightmost_untrusted

if TYPE_CHECKING:
    from pyngress.model import Endpoint, ProxySettings
    from pyngress.runtime.h2_stream import H2Stream
    from pyngress.runtime.h2_upstream import H2Upstream
    from pyngress.runtime.state import Serving

GRPC_PROTOCOLS = frozenset({"GRPC", "GRPCS"})
CANCEL = 0x8
INTERNAL_ERROR = 0x2
NO_ERROR = 0x0
REFUSED_STREAM = 0x7

# fields the proxy owns on the way to the pod: connection-specific ones (never valid in HTTP/2) and the
# forwarded ones it sets itself (from a trusted proxy they are read first: `_forwarded`)
_OURS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host",
                   b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-host",
                   b"x-forwarded-port", b"http2-settings"})
_FORWARDED = frozenset({http1.FORWARDED_FOR, http1.FORWARDED_PROTO, http1.FORWARDED_HOST, http1.FORWARDED_PORT})


def upstream_headers(stream: H2Stream, headers: list[tuple[bytes, bytes]], tls: bool) -> list[tuple[bytes, bytes]]:
    """The request's header list for the pod: pseudo-headers first, then the client's fields, then ours."""
    pseudo: list[tuple[bytes, bytes]] = []
    fields: list[tuple[bytes, bytes]] = []
    serving = stream.server.dataplane.serving
    roles = serving.header_roles  # knows `forwarded-for-header`, as for HTTP/1.1
    forwarded: dict[int, bytes] = {}  # the client's X-Forwarded-* by role: used only from a trusted proxy
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
        elif roles.get(name) in _FORWARDED:
            role = roles[name]
            old = forwarded.get(role)
            forwarded[role] = value if old is None else old + b", " + value
        elif name not in _OURS and not name.startswith(b"proxy-"):
            request_id = request_id or name == b"x-request-id"
            fields.append((name, value))
    ours = _forwarded(stream, serving, authority, forwarded)
    if not request_id and serving.settings.generate_request_id:
        ours.append((b"x-request-id", stream.server.request_ids()))
    return [*pseudo, *fields, *ours]


def _forwarded(stream: H2Stream, serving: Serving, authority: bytes,
               client: dict[int, bytes]) -> list[tuple[bytes, bytes]]:
    """X-Forwarded-* and X-Real-IP as `request_head.HeadBuilder` sets them for HTTP/1.1: overwritten for an
    untrusted client; from a trusted proxy (proxy-real-ip-cidr, or use-forwarded-headers without a CIDR
    list) its X-Forwarded-For chain is kept with the peer appended, X-Real-IP is the right-most address of
    that chain that is not a trusted proxy, and its X-Forwarded-Proto/Host/Port are passed through."""
    peer = stream.connection.peer
    xff = real_ip = peer.address
    proto, host, port = peer.scheme, authority, peer.port
    trusted = serving.trust_all or (bool(serving.trusted) and serving.is_trusted(stream.client_ip))
    if trusted:
        chain = client.get(http1.FORWARDED_FOR)
        if chain:
            xff = chain + b", " + peer.address
            real_ip = rightmost_untrusted(xff, serving.trusted_cidrs).encode()
        proto = client.get(http1.FORWARDED_PROTO) or proto
        host = client.get(http1.FORWARDED_HOST) or host
        port = client.get(http1.FORWARDED_PORT) or port
    return [(b"x-forwarded-for", xff), (b"x-real-ip", real_ip), (b"x-forwarded-proto", proto),
            (b"x-forwarded-host", host), (b"x-forwarded-port", port)]


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
        self._judged = False  # passive health has had this call's outcome (issue 7)

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
        self._judged = True  # the pool counted the failed connect once for every call waiting on it
        self._fail(status)

    def upstream_lost(self, failure: bool = True) -> None:
        """The pod's connection is gone; `failure` False: the pod's GOAWAY turned this stream away unread."""
        self.upstream = None
        if failure:
            self._outcome(False)
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
            self._outcome(_grpc_status(headers) != UNAVAILABLE)
            return
        if ended:  # "trailers-only" (gRPC errors): one HEADERS frame with END_STREAM, relayed as one
            self.response_started = True
            stream.trailers = headers
            self._outcome(not _server_error(headers) and _grpc_status(headers) != UNAVAILABLE)
            self.upstream_ended()
            return
        self.response_started = True
        if _server_error(headers):
            self._outcome(False)
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
        self._outcome(True)
        self._finish_upstream()
        stream.response_ended = True
        stream.send_pending()
        stream.connection.flush()

    def upstream_reset(self, code: int) -> None:
        self.upstream = None
        if code not in (NO_ERROR, REFUSED_STREAM, CANCEL):  # not a pod that stopped early or turned us away
            self._outcome(False)
        self._fail(502, code)

    def _outcome(self, ok: bool) -> None:
        """Passive health: this call's outcome, counted once."""
        if self._judged:
            return
        self._judged = True
        health = self.stream.server.health
        record = health.record(self.endpoint.key)
        record.attempts += 1
        if not ok:
            health.failed(record)
        elif record.consecutive or record.probation:
            health.succeeded(record)

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


UNAVAILABLE = 14  # the gRPC status a pod answers when it cannot serve


def _server_error(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b":status" and value[:1] == b"5" for name, value in headers)


def _grpc_status(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() else -1
    return 0
