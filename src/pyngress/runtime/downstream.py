"""The client side of the proxy: one `Downstream` per accepted connection.

httptools (llhttp, strict) parses requests. Its callbacks collect the head; `on_headers_complete` checks what
llhttp leaves to us (Host, HTTP/1.0 with Transfer-Encoding, sizes), builds the upstream request head in one
piece and queues an Exchange. Exchanges are answered strictly in order (pipelining): only the first in the
queue talks to an upstream; the others wait, with their bodies kept in memory, and reading from the client is
paused while any wait, so that memory stays bounded by one read.

Anything malformed gets its 4xx and the connection is closed: nothing after a framing error is ever parsed, so
a smuggled request can never reach a backend (llhttp already refuses Content-Length with Transfer-Encoding,
duplicate Content-Length, a Transfer-Encoding not ending in chunked, bad chunk sizes, whitespace before the
colon and obs-fold).

Flow control: while the upstream's write buffer is full we stop reading the client (`PAUSE_UPSTREAM`); while
ours is full the upstream stops reading (see `pause_writing`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Final, cast

import httptools

from pyngress.balancing import PickContext
from pyngress.runtime import flow, h2_preface, http1, https, picking, request_head, retrying, tunnel
from pyngress.runtime.exchange import NO_BODY, Exchange

if TYPE_CHECKING:
    from pyngress.model import Route
    from pyngress.runtime.server import ProxyServer
    from pyngress.runtime.state import Serving

PAUSE_UPSTREAM: Final = 1  # the upstream cannot take more body yet
PAUSE_PIPELINE: Final = 2  # requests are queued behind the one being answered
PAUSE_BUFFER: Final = 4  # body is piling up while no upstream is attached

BODY_BUFFER_LIMIT: Final = 256 * 1024  # pending body bytes before we stop reading the client
_clock: Final = perf_counter  # Final: the compiled build reads it from a C static, not the module's globals


def as_protocol(conn: object) -> asyncio.Protocol:
    """Our protocols do not subclass asyncio.Protocol, so that mypyc compiles them as native classes (attribute
    access in C, not through an instance dict); the event loop only calls their methods."""
    return cast(asyncio.Protocol, conn)


class Downstream:
    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        # the server's parts this connection uses per request, kept here: one attribute access, not two
        self.clock, self.pool, self.recorder, self.dataplane = server.clock, server.pool, server.recorder, \
            server.dataplane
        self._next_id, self._no_context = server.request_ids, server.no_context
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.last_activity = self.clock.now
        self.queue: deque[Exchange] = deque()  # queue[0] is the exchange being answered
        self.receiving: Exchange | None = None  # the exchange whose body is arriving
        self.head_started = -1.0  # loop time when the current request head began; -1 when not in a head
        self.requests = 0
        self.closing = False  # parse nothing more; close once the queued exchanges are answered
        self.gone = False  # the connection is lost
        self._paused = 0
        self._parser = httptools.HttpRequestParser(self)
        self._head: request_head.HeadBuilder | None = None
        self._head_bytes = 0
        self.peer = request_head.Peer("", 0)
        self._trust_for: Serving | None = None
        self._pick_context = PickContext()
        self._trusted = False
        self._ready: Exchange | None = None  # queued during this feed_data, to start once it returns
        self._ready_serving: Serving | None = None
        self.bytes_in = self.bytes_out = 0  # metrics (issue 8): bytes read from and written to the client
        self.bytes_in_mark = self.bytes_out_mark = 0  # their values when the previous response completed
        self.https = False  # a TLS connection (set by runtime.https_listener before connection_made)

    # -- connection events -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        self.use_client_address(peer[0] if peer else "")
        self.server.connection_opened(self)

    def use_client_address(self, ip: str) -> None:
        """The client of this connection: the TCP peer, or the source a PROXY protocol header carried."""
        self.client_ip = ip
        sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
        self.peer = request_head.Peer(ip, sock[1] if sock else 0, self.https)
        self._pick_context = PickContext(ip)
        self._trust_for = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = self.gone = True
        self.server.connection_closed(self)
        for ex in self.queue:
            self.recorder.abandoned(ex)
            self.end_attempt(ex, ok=False)
            flow.release(ex)
            if ex.upstream is not None:
                ex.upstream.abandon()
        self.queue.clear()
        self.receiving = None

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets the answer (HTTP/1.0 clients, curl -N...).
        if self.queue:
            self.closing = True
            return True
        return False

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.clock.now
        self.bytes_in += len(data)
        if self.closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.queue and self.queue[-1].upgrade is not None:  # WebSocket (issue 4)
                tunnel.hold(self, self.queue[-1], data[int(exc.args[0]):])
            else:
                self._upgrade_refused()
        except httptools.HttpParserError as exc:
            if not self.requests and not self.queue and h2_preface.is_preface(exc, data):
                h2_preface.hand_over(self, data)  # h2c with prior knowledge (issue 4)
                return
            status = exc.__context__.status if isinstance(exc.__context__, http1.RequestError) else 400
            self.refuse(status)
        else:
            if self.head_started >= 0:
                self._check_partial_head(data)
        # Forwarding starts only once llhttp has accepted everything it was given: it reports some errors
        # (a bad Transfer-Encoding, for one) after the head callbacks, when a head would already be upstream.
        ready, self._ready = self._ready, None
        if ready is not None and self.queue and self.queue[0] is ready:
            self.start(ready, self._ready_serving)

    def _check_partial_head(self, data: bytes) -> None:
        self._head_bytes += len(data)
        if self._head_bytes > self.dataplane.serving.head_limit:
            self.refuse(431)
        elif b"\n" in data and self._head is not None and self._head.url and \
                self._parser.get_http_version() == "0.0":
            self.refuse(400)  # an HTTP/0.9 request line: llhttp would wait for a blank line

    def pause_writing(self) -> None:
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.resume_reading()

    def pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if was and not self._paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- parser callbacks --------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_started = self.clock.now
        self._head_bytes = 0
        self._head = request_head.HeadBuilder(self.dataplane.serving)

    def on_url(self, url: bytes) -> None:
        assert self._head is not None
        self._head.add_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head is None:  # trailer fields of a chunked body: not forwarded
            return
        status = head.add_header(name, value)
        if status:
            raise http1.RequestError(status)

    def on_headers_complete(self) -> None:
        builder, self._head = self._head, None
        self.head_started = -1.0
        assert builder is not None
        serving = builder.serving
        if serving is not self._trust_for:  # trust is decided once per connection and configuration
            self._trust_for = serving
            self._trusted = serving.trust_all or (bool(serving.trusted) and serving.is_trusted(self.client_ip))
        parser = self._parser
        ex = builder.finish(self, parser.get_method(), parser.get_http_version(), parser.should_keep_alive(),
                            self.peer, self._trusted, self._next_id)
        if isinstance(ex, int):
            raise http1.RequestError(ex)
        self.receiving = ex
        queue = self.queue
        queue.append(ex)
        if len(queue) == 1:
            self._ready, self._ready_serving = ex, builder.serving  # started when feed_data returns
        else:
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.receiving
        if ex is None:
            return
        if ex.body_budget >= 0:  # proxy-body-size on a chunked body (runtime.flow.body_fits)
            ex.body_budget -= len(body)
            if ex.body_budget < 0:
                self.server.flow.refused_body += 1
                raise http1.RequestError(413)
        ex.add_body(body)
        if ex.upstream is None and ex.pending_size > BODY_BUFFER_LIMIT:
            self.pause(PAUSE_BUFFER)

    def on_message_complete(self) -> None:
        ex = self.receiving
        if ex is None:
            return
        self.receiving = None
        if ex.framing != NO_BODY:
            ex.end_body()

    # -- answering -----------------------------------------------------------------------------------

    def start(self, ex: Exchange, serving: Serving | None = None) -> None:
        """Route and balance the exchange at the head of the queue, then hand it to an upstream."""
        if ex.canned is not None:
            self.answer(ex, ex.canned)
            return
        if serving is None:
            serving = self.dataplane.serving
        route = picking.route_for(ex, serving)
        if route is None:
            unmatched = serving.snapshot.tls.unmatched  # issue 4: redirect/HSTS as the host's default location
            if unmatched is not None and (self.https or unmatched.redirect) and https.intercept(self, ex,
                                                                                                 unmatched):
                return
            self.answer_status(ex, 404)
            return
        policy = route.https  # issue 4: redirect to HTTPS, HSTS; None on routes without TLS settings
        if policy is not None and (self.https or policy.redirect) and https.intercept(self, ex, policy):
            return
        if ex.framing != NO_BODY and route.max_body and not flow.body_fits(self, ex, route.max_body):
            return
        if route.flow is not None and not self.server.flow.admit(self, ex, serving, route):
            return  # refused, or waiting for the global limit's answer
        self.dispatch(ex, serving, route)

    def dispatch(self, ex: Exchange, serving: Serving, route: Route, failed: int = 503) -> None:
        """Pick an endpoint and send; `failed` is the answer when there is none (503: no endpoints at all;
        on a retry, the status of the attempt that failed)."""
        key = route.balancer_key
        balancer = serving.balancers.get(key)
        contextual = ex.tried or key in serving.contextual
        ctx = picking.fill_context(self._pick_context, ex, serving, key, self.clock.now) if contextual \
            else self._no_context
        endpoint = balancer.pick(ctx) if balancer is not None else None
        if endpoint is None:
            self.answer_status(ex, failed)
            return
        ex.endpoint = endpoint
        if not ex.attempts:
            ex.started = self.clock.now  # issue 7: proxy-next-upstream-timeout's clock (ex.route: the policy)
        ex.upstream_tls = route.upstream_tls  # issue 4: re-encrypt to the pod (backend-protocol: HTTPS)
        ex.attempts += 1
        ex.route, ex.sent_at = route, _clock()
        cookie = serving.cookies.get(key) if contextual else None
        if cookie is not None and balancer is not None:
            picking.affinity_cookie(ex, cookie[0], balancer, endpoint, route, ctx.affinity)
        if key in serving.tracked:  # a load-aware balancer: it counts this request until it ends
            picking.start_attempt(ex, serving, endpoint, self.server.loop.time())
        if ex.expect_continue and not ex.request_done and ex.attempts == 1 and self.transport is not None:
            self.transport.write(http1.CONTINUE_100)
        self.pool.acquire(endpoint, ex, serving.settings)

    def end_attempt(self, ex: Exchange, ok: bool) -> None:
        """Tell the stats registry that the attempt in flight ended (a response, or a failure)."""
        if ex.tracked is not None:  # only on routes with a load-aware balancer
            picking.end_attempt(ex, ok, self.server.loop.time())

    def retry(self, ex: Exchange, status: int, cause: int = retrying.ERROR, sent: bool = True) -> None:
        """The attempt failed before any response byte: another endpoint if the route's retry policy
        allows (`runtime.retrying`), else answer `status`. `sent`: the request reached the endpoint."""
        assert ex.endpoint is not None
        self.end_attempt(ex, ok=False)
        self.recorder.attempt_failed(ex.endpoint)
        ex.upstream = None
        ex.tried = (*ex.tried, ex.endpoint.key)
        if self.gone or not retrying.allowed(ex, self.server, cause, status, sent):
            self.answer_status(ex, status)
            return
        self.next_attempt(ex, status)

    def may_retry_status(self, ex: Exchange, status: int) -> bool:
        """A response head with a status the route retries (http_502...) arrived, not forwarded yet: True
        when it is to be dropped for another attempt (the caller then detaches and calls `next_attempt`)."""
        if self.gone or not retrying.allowed(ex, self.server, retrying.STATUS, status, True):
            return False
        assert ex.endpoint is not None
        self.end_attempt(ex, ok=False)
        ex.tried = (*ex.tried, ex.endpoint.key)
        return True

    def next_attempt(self, ex: Exchange, status: int) -> None:
        serving = self.dataplane.serving  # the current config: it may have changed since the first try
        route = picking.route_for(ex, serving)
        if route is None:
            self.answer_status(ex, status)
            return
        self.dispatch(ex, serving, route, failed=status)

    def answer_status(self, ex: Exchange, status: int) -> None:
        # A body we have not read may still be on its way: then we cannot reuse the connection.
        close = self.should_close(ex)
        ex.close_after = close
        ex.status = status
        self.answer(ex, http1.generated_response(
            status, self.server.date, close=close, head_only=ex.method == b"HEAD", extra_headers=ex.hsts or b""))

    def answer(self, ex: Exchange, response: bytes) -> None:
        if ex is not self.queue[0]:  # pipelined: wait for our turn
            ex.canned = response
            return
        if self.transport is not None:
            self.transport.write(response)
            self.bytes_out += len(response)
        self.finished(ex)

    def should_close(self, ex: Exchange) -> bool:
        """Decided when the response head is written, so that it can say `Connection: close`."""
        settings = self.dataplane.serving.settings
        last = self.closing and len(self.queue) == 1  # closing, and nothing queued behind this one
        return (ex.close_after or last or not ex.keep_alive or not ex.request_done or self.server.draining
                or self.requests + 1 >= settings.keep_alive_requests or settings.keep_alive <= 0)

    def finished(self, ex: Exchange) -> None:
        """The response to `ex` is complete on our side."""
        out, inn = self.bytes_out, self.bytes_in
        self.recorder.record(ex, out - self.bytes_out_mark, inn - self.bytes_in_mark)  # metrics, access log
        self.bytes_out_mark, self.bytes_in_mark = out, inn
        if ex.tracked is not None:
            self.end_attempt(ex, ok=ex.response_started)
        if ex.flow_hold is not None:
            flow.release(ex)
        self.queue.popleft()
        self.requests += 1
        if ex.close_after:
            self.close()
        elif self.queue:
            if len(self.queue) == 1:
                self.resume(PAUSE_PIPELINE)
            self.start(self.queue[0])
        elif self.closing or self.server.draining:
            self.close()

    def refuse(self, status: int) -> None:
        """Answer a malformed request and close; nothing after it on this connection is parsed."""
        self.closing = True
        self._head = None
        self.head_started = -1.0
        rx, self.receiving = self.receiving, None
        if rx is not None:  # its body broke off: that exchange cannot complete
            if rx.response_started:
                self.close()
                return
            if rx.upstream is not None:
                rx.upstream.abandon()
            self.end_attempt(rx, ok=False)
            flow.release(rx)
            self.queue.remove(rx)
        response = http1.generated_response(status, self.server.date, close=True,
                                            head_only=self._method_or_empty() == b"HEAD")
        if self.queue:  # earlier pipelined requests are answered first
            bad = Exchange(self, b"", b"", b"", b"", NO_BODY, False, False)
            bad.canned, bad.close_after, bad.status = response, True, status
            self.queue.append(bad)
        elif self.transport is not None:
            self.transport.write(response)
            self.transport.close()
            self.recorder.refused(self, status, self._method_or_empty(), len(response))

    def _method_or_empty(self) -> bytes:
        try:
            return self._parser.get_method()
        except httptools.HttpParserError:
            return b""

    def _upgrade_refused(self) -> None:
        # Upgrade (WebSocket) arrives in a later issue. The request is answered as a plain request (its
        # Upgrade header is not forwarded) and the connection closes after it: llhttp stops parsing there.
        self.closing = True
        if not self.queue:
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.bytes_out += len(data)

    def writelines(self, pieces: list[bytes]) -> None:
        if self.transport is not None:
            self.transport.writelines(pieces)
            self.bytes_out += sum(map(len, pieces))

    def tunnel(self, ex: Exchange, upstream: asyncio.Transport, head: bytes, rest: bytes) -> None:
        """The upstream switched to WebSocket: this connection becomes a tunnel (runtime.tunnel)."""
        tunnel.take_over(self, ex, upstream, head, rest)

    def dispatch_again(self, ex: Exchange) -> None:
        """Resend to the same endpoint on another connection (a stale pooled one died); not a new attempt."""
        assert ex.endpoint is not None
        if not ex.rewind():  # issue 7: a body already sent goes again from the copy kept for replays
            self.retry(ex, 502)
            return
        self.pool.acquire(ex.endpoint, ex, self.dataplane.serving.settings)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close without flushing: used when an upstream dies mid-response, so the client sees a truncation."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

