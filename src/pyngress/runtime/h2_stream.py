"""One HTTP/2 request stream, forwarded as an HTTP/1.1 exchange (issue 4).

Request: `runtime.h2_request` turns the header list into an Exchange with its HTTP/1.1 head; the stream is
then routed and balanced on its own and handed to the upstream pool like any request, or, on a gRPC route,
relayed to an HTTP/2 stream to the pod (`runtime.h2_relay`).

Response: `Upstream` forwards any response as HTTP/1.1 bytes (the `ClientSide` contract). A stream parses them
again with httptools (C; small next to h2's own cost per frame), drops the hop-by-hop fields, and sends
HEADERS and DATA. The stream ends when the upstream says the response is complete (`finished`).

Errors map as for HTTP/1.1: no route 404, no endpoint 503, connect failure 502, timeouts 504, with one retry
on another endpoint for idempotent requests. An upstream that dies mid-response resets the stream
(INTERNAL_ERROR): the client sees a failed stream, never a truncated body that looks complete.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions
import httptools

from pyngress.model import UpstreamTLS
from pyngress.runtime import flow, h2_https, h2_relay, h2_request, h2_tunnel, http1, picking, retrying
from pyngress.runtime.downstream import PAUSE_BUFFER
from pyngress.runtime.exchange import NO_BODY, Exchange

if TYPE_CHECKING:
    import asyncio

    from pyngress.model import Endpoint, ProxySettings, Route
    from pyngress.runtime.h2 import H2Downstream
    from pyngress.runtime.state import Serving
    from pyngress.runtime.upstream import Upstream

DEFAULT_UPSTREAM_TLS = UpstreamTLS()  # GRPCS without proxy-ssl-* settings: encrypted, not verified
PAUSE_WINDOW = 1  # the client's flow-control window is shut and our buffer is over its limit
PAUSE_TRANSPORT = 2  # the client connection's write buffer is full
PENDING_LIMIT = 64 * 1024  # response bytes kept for a shut window before the upstream is paused

INTERNAL_ERROR = 0x2
CANCEL = 0x8
NO_ERROR = 0x0

_DROP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te",
                   b"trailer", b"http2-settings"})


class H2Stream:
    def __init__(self, connection: H2Downstream, stream_id: int) -> None:
        self.connection = connection
        self.server = connection.server
        self.stream_id = stream_id
        self.client_ip = connection.client_ip
        self.https = connection.tls
        self.gone = False  # reset by the client, or the connection is lost
        self.ex: Exchange | None = None
        self.request_ended = False
        self.response_ended = False
        self._paused = 0  # ClientSide pause reasons (PAUSE_UPSTREAM, PAUSE_BUFFER): hold back window updates
        self._unacked = 0
        self._upstream_paused = 0  # PAUSE_WINDOW | PAUSE_TRANSPORT
        self._paused_conn: Upstream | asyncio.Transport | None = None  # what we paused, to resume it
        self._parser: httptools.HttpResponseParser | None = None
        self._fields: list[tuple[bytes, bytes]] = []
        self._out: deque[bytes] = deque()
        self._out_size = 0
        self.end_sent = False  # END_STREAM is out: nothing more to send on this stream
        self.marked = False  # queued for the connection's next flush
        self.relay: h2_relay.Relay | None = None  # gRPC routes: relayed to an HTTP/2 stream to the pod
        self.trailers: list[tuple[bytes, bytes]] | None = None  # response trailers, sent after the last DATA
        self.pod: h2_tunnel.PodSide | None = None  # RFC 8441 WebSocket: the pod's socket after its 101
        self._tunnel_seen = 0.0
        self._body_seen = connection.server.now  # the last request body byte (client-body-timeout)
        # metrics (issue 8): the response as forwarded in HTTP/1.1 form (before HPACK and framing), the request
        # body; the recorder reads them when the stream finishes
        self.bytes_in = self.bytes_out = self.bytes_in_mark = self.bytes_out_mark = 0

    # -- the request ----------------------------------------------------------------------------------------

    def on_request(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.request_ended = ended
        serving = self.server.dataplane.serving
        ex = h2_request.exchange_for(self, headers, ended, serving)
        if isinstance(ex, int):
            self._answer_early(ex)
            return
        self.ex = ex
        route = picking.route_for(ex, serving)
        if route is None:
            self.answer_status(ex, 404)
        elif route.https is not None and h2_https.intercept(self, ex, route.https):
            pass  # redirected to https (h2c on the plain port)
        elif ex.framing != NO_BODY and route.max_body and not flow.body_fits(self, ex, route.max_body):
            pass  # issue 5: 413 (proxy-body-size)
        elif route.flow is not None and not self.server.flow.admit(
                self, ex, serving, route, may_wait=route.backend_protocol not in h2_relay.GRPC_PROTOCOLS):
            pass  # issue 5: refused, or waiting for the global limit (which then dispatches)
        elif route.backend_protocol in h2_relay.GRPC_PROTOCOLS:
            self._relay(ex, serving, route, headers, ended)
        else:
            self.dispatch(ex, serving, route)

    def _relay(self, ex: Exchange, serving: Serving, route: Route, headers: list[tuple[bytes, bytes]],
               ended: bool) -> None:
        endpoint = self._pick(ex, serving, route)
        if endpoint is None:
            self.answer_generated(503)
            return
        tls = (route.upstream_tls or DEFAULT_UPSTREAM_TLS) if route.backend_protocol == "GRPCS" else None
        fields = h2_relay.upstream_headers(self, headers, tls is not None)
        relay = self.relay = h2_relay.Relay(self, endpoint, fields, ended)
        self.server.h2_upstreams.acquire(endpoint, relay, tls)

    def dispatch(self, ex: Exchange, serving: Serving, route: Route, failed: int = 503) -> None:
        """As Downstream.dispatch: pick an endpoint for this stream alone and send."""
        endpoint = self._pick(ex, serving, route)
        if endpoint is None:
            self.answer_status(ex, failed)
            return
        self.server.pool.acquire(endpoint, ex, serving.settings)

    def _pick(self, ex: Exchange, serving: Serving, route: Route) -> Endpoint | None:
        key = route.balancer_key
        balancer = serving.balancers.get(key)
        contextual = ex.tried or key in serving.contextual
        ctx = picking.fill_context(self.connection.pick_context, ex, serving, key, self.server.now) \
            if contextual else self.server.no_context
        endpoint = balancer.pick(ctx) if balancer is not None else None
        if endpoint is None:
            return None
        ex.endpoint = endpoint
        if not ex.attempts:
            ex.route, ex.started = route, self.server.now  # issue 7: the retry policy and its clock
        ex.attempts += 1
        cookie = serving.cookies.get(key) if contextual else None
        if cookie is not None and balancer is not None:
            picking.affinity_cookie(ex, cookie[0], balancer, endpoint, route, ctx.affinity)
        if key in serving.tracked:
            picking.start_attempt(ex, serving, endpoint, self.server.loop.time())
        return endpoint

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        self._body_seen = self.server.now
        self.bytes_in += len(data)
        if self.pod is not None:
            self.pod.client_data(data, flow_controlled)
            return
        if self.relay is not None:
            self.relay.client_data(data, flow_controlled)
            return
        ex = self.ex
        if ex is None or self.response_ended or ex.framing == NO_BODY:
            self.connection.ack(flow_controlled, self.stream_id)
            return
        if ex.body_budget >= 0:  # issue 5: proxy-body-size on a body without content-length
            ex.body_budget -= len(data)
            if ex.body_budget < 0:
                self.connection.ack(flow_controlled, self.stream_id)
                flow.body_overflow(self, ex)
                return
        ex.add_body(data)
        if ex.upstream is None:
            self._paused |= PAUSE_BUFFER  # kept in memory until an upstream connection is attached
        if self._paused:
            self._unacked += flow_controlled  # handed back when the upstream has taken the bytes
        else:
            self.connection.ack(flow_controlled, self.stream_id)

    def on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.relay is not None:
            self.relay.client_end(headers)
            self.request_ended = True
            return
        self.on_end()  # HTTP/1.1 upstreams get no request trailers (as with chunked HTTP/1.1 requests)

    def on_end(self) -> None:
        self.request_ended = True
        if self.pod is not None:
            self.pod.client_end()
        if self.relay is not None and not self.relay.request_ended:
            self.relay.client_end()
        ex = self.ex
        if ex is not None and ex.framing != NO_BODY and not ex.request_done and not self.response_ended:
            ex.end_body()
        if self.response_ended and not self._out:
            self.connection.stream_done(self)

    def reset_by_client(self) -> None:
        self.gone = True
        if self.pod is not None:
            self.pod.close()
        if self.relay is not None:
            self.relay.client_reset()
        ex = self.ex
        if ex is not None:
            picking.end_attempt(ex, False, self.server.loop.time())
            flow.release(ex)
            if ex.upstream is not None:
                ex.upstream.abandon()
        self._out.clear()

    # -- ClientSide: what the upstream calls ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpResponseParser(self)
        # Upstream framed these bytes itself, so they parse; the stream ends on `finished`, not on the parser
        # (which cannot know that a response to HEAD has no body)
        with contextlib.suppress(httptools.HttpParserError):
            parser.feed_data(data)
        self.connection.flush()

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def should_close(self, ex: Exchange) -> bool:
        return False

    def finished(self, ex: Exchange) -> None:
        self.server.recorder.finished(ex)  # metrics and access log (issue 8)
        picking.end_attempt(ex, ex.response_started, self.server.loop.time())
        if ex.flow_hold is not None:
            flow.release(ex)
        self.response_ended = True
        conn = self._paused_conn
        if conn is not None:  # the upstream connection goes back to the pool: it must be reading again
            self._paused_conn = None
            conn.resume_reading()
        self.send_pending()
        self.connection.flush()

    def retry(self, ex: Exchange, status: int, cause: int = retrying.ERROR, sent: bool = True) -> None:
        """As Downstream.retry: the route's retry policy decides (issue 7, runtime.retrying)."""
        assert ex.endpoint is not None
        picking.end_attempt(ex, False, self.server.loop.time())
        self.server.recorder.attempt_failed(ex.endpoint)  # pyngress_endpoint_failed_attempts, as HTTP/1.1
        ex.upstream = None
        ex.tried = (*ex.tried, ex.endpoint.key)
        if self.gone or not retrying.allowed(ex, self.server, cause, status, sent):
            self.answer_status(ex, status)
            return
        self.next_attempt(ex, status)

    def may_retry_status(self, ex: Exchange, status: int) -> bool:
        """As Downstream.may_retry_status."""
        if self.gone or not retrying.allowed(ex, self.server, retrying.STATUS, status, True):
            return False
        assert ex.endpoint is not None
        picking.end_attempt(ex, False, self.server.loop.time())
        ex.tried = (*ex.tried, ex.endpoint.key)
        return True

    def next_attempt(self, ex: Exchange, status: int) -> None:
        serving = self.server.dataplane.serving
        route = picking.route_for(ex, serving)
        if route is None:
            self.answer_status(ex, status)
            return
        self.dispatch(ex, serving, route, failed=status)

    def dispatch_again(self, ex: Exchange) -> None:
        assert ex.endpoint is not None
        if not ex.rewind():  # issue 7: a body already sent goes again from the copy kept for replays
            self.retry(ex, 502)
            return
        self.server.pool.acquire(ex.endpoint, ex, self.server.dataplane.serving.settings)

    def answer_status(self, ex: Exchange, status: int) -> None:
        ex.status = status  # metrics and access log, as Downstream.answer_status
        if self.gone:
            return
        self.write(http1.generated_response(status, self.server.date, close=False,
                                            head_only=ex.method == b"HEAD", extra_headers=ex.hsts or b""))
        self.finished(ex)

    def answer(self, ex: Exchange, response: bytes) -> None:
        """A complete generated response (a redirect)."""
        self.write(response)
        self.finished(ex)

    def _answer_early(self, status: int) -> None:
        """A request refused before it became an exchange (bad head, CONNECT...)."""
        self.answer_generated(status)

    def answer_generated(self, status: int) -> None:
        """Answer with a generated response outside the Exchange machinery (refusals, the gRPC relay)."""
        if self.gone:
            return
        head_only = self.ex is not None and self.ex.method == b"HEAD"
        self.write(http1.generated_response(status, self.server.date, close=False, head_only=head_only))
        self.response_ended = True
        self.send_pending()
        self.connection.flush()

    def pause(self, reason: int) -> None:
        self._paused |= reason

    def resume(self, reason: int) -> None:
        self._paused &= ~reason
        if not self._paused and self._unacked:
            unacked, self._unacked = self._unacked, 0
            self.connection.ack(unacked, self.stream_id)
            self.connection.flush()

    def close(self) -> None:
        """The response broke off mid-body: the client must see a failed stream."""
        self._reset(INTERNAL_ERROR)

    def close_with(self, code: int) -> None:
        self._reset(code)

    def tunnel(self, ex: Exchange, upstream: asyncio.Transport, head: bytes, rest: bytes) -> None:
        """The pod accepted the WebSocket of an extended CONNECT (RFC 8441): see runtime.h2_tunnel."""
        picking.end_attempt(ex, True, self.server.loop.time())
        if self.gone:
            flow.release(ex)
            upstream.close()
            return
        self._tunnel_seen = self.server.now
        self.pod = h2_tunnel.open_tunnel(self, upstream, head, rest)
        self.pod.hold = flow.hand_over(ex)  # issue 5: the WebSocket keeps its limit-connections slot while open

    def tunnel_activity(self) -> None:
        self._tunnel_seen = self.server.now

    # -- httptools callbacks: the HTTP/1.1 response, turned into HEADERS and DATA --------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in _DROP:
            self._fields.append((lower, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        fields, self._fields = self._fields, []
        if self.gone:
            return
        try:
            self.connection.conn.send_headers(self.stream_id, [(b":status", b"%d" % status), *fields])
        except h2.exceptions.ProtocolError:  # the stream or the connection closed under us
            self.gone = True

    def on_body(self, body: bytes) -> None:
        if not self.gone:
            self._out.append(body)
            self._out_size += len(body)
            # sent when the connection flushes (this loop iteration's end), or by `finished` if that comes
            # first: then the last DATA frame carries END_STREAM instead of an empty frame after it
            self.connection.mark(self)

    # -- flow control towards the client ---------------------------------------------------------------------

    def send_pending(self) -> None:
        """Send what the client's windows allow; end the stream once the response is complete and sent."""
        if self.gone or self.end_sent:
            return
        conn = self.connection.conn
        out = self._out
        try:
            while out:
                window = conn.local_flow_control_window(self.stream_id)
                if window <= 0:
                    break
                chunk = out[0]
                size = min(window, conn.max_outbound_frame_size, len(chunk))
                last = size == len(chunk) and len(out) == 1 and self.response_ended and self.trailers is None
                conn.send_data(self.stream_id, chunk[:size] if size < len(chunk) else chunk, end_stream=last)
                if size < len(chunk):
                    out[0] = chunk[size:]
                else:
                    out.popleft()
                self._out_size -= size
                if last:
                    self.end_sent = True
            if not out and self.response_ended:
                self._end()
        except h2.exceptions.ProtocolError:  # StreamClosedError, or the connection is closing
            self.gone = True
            out.clear()
            return
        if self.relay is not None:
            self.relay.client_drained(self._out_size <= PENDING_LIMIT)
        elif self._out_size > PENDING_LIMIT:
            self.pause_upstream(PAUSE_WINDOW)
        elif self._upstream_paused & PAUSE_WINDOW:
            self.resume_upstream(PAUSE_WINDOW)

    def _end(self) -> None:
        if self.pod is not None:
            self.pod.close()
        if self.trailers is not None:
            self.connection.conn.send_headers(self.stream_id, self.trailers, end_stream=True)
        elif not self.end_sent:
            self.connection.conn.end_stream(self.stream_id)
        self.end_sent = True
        if not self.request_ended:  # RFC 9113 8.1: answered before the request ended; we read no more of it
            self.connection.conn.reset_stream(self.stream_id, NO_ERROR)
        self.connection.stream_done(self)

    def _reset(self, code: int) -> None:
        if self.pod is not None:
            self.pod.close()
        if not self.gone:
            self.gone = True
            self._out.clear()
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.connection.conn.reset_stream(self.stream_id, code)
            self.connection.flush()
        self.connection.stream_done(self)

    def pause_upstream(self, reason: int) -> None:
        upstream: Upstream | asyncio.Transport | None = self.ex.upstream if self.ex is not None else None
        if self.pod is not None:
            upstream = self.pod.transport
        if upstream is not None and not self._upstream_paused:
            upstream.pause_reading()
            self._paused_conn = upstream
        self._upstream_paused |= reason

    def resume_upstream(self, reason: int) -> None:
        was = self._upstream_paused
        self._upstream_paused &= ~reason
        conn = self._paused_conn
        if was and not self._upstream_paused and conn is not None:
            self._paused_conn = None
            conn.resume_reading()

    def check_timeouts(self, now: float, settings: ProxySettings) -> None:
        if self.pod is not None:
            if now - self._tunnel_seen > settings.proxy_read_timeout:
                self._reset(CANCEL)  # an idle WebSocket, as over HTTP/1.1
            return
        if not self.request_ended and now - self._body_seen > settings.client_body_timeout and \
                (self.ex is None or self.ex.upgrade is None):
            self._body_timed_out()
            return
        if self.relay is not None:
            self.relay.check_timeout(now, settings)
            return
        upstream = self.ex.upstream if self.ex is not None else None
        if upstream is not None:
            upstream.check_timeouts(now, settings.proxy_read_timeout, settings.proxy_send_timeout)

    def _body_timed_out(self) -> None:
        """client-body-timeout: no request body byte for that long. As nginx: 408 if the response has not
        started (then RST_STREAM NO_ERROR: we read no more of the body), else the stream is reset. Applies to
        gRPC calls too (ingress-nginx: request-streaming calls idle longer need a larger client-body-timeout)."""
        relay, ex = self.relay, self.ex
        if relay is not None:
            started = relay.response_started
            relay.client_reset()
        else:
            started = ex is not None and ex.response_started
            if ex is not None:
                picking.end_attempt(ex, False, self.server.loop.time())
                if ex.upstream is not None:
                    ex.upstream.abandon()
                    ex.upstream = None
        if started:
            self._reset(CANCEL)
            return
        if ex is not None and relay is None:
            self.answer_status(ex, 408)  # through `finished`: counted and logged like any answer
        else:
            self.answer_generated(408)
        self.gone = True  # an upstream connection still being opened for it must not be attached
