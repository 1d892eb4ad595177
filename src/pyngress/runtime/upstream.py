"""The server side of the proxy: one `Upstream` per connection to an endpoint, reused through the pool.

A response is handled in two parts. The head is cut at the first CRLFCRLF and given to httptools (llhttp,
strict) to parse and validate. It is forwarded as received, minus the lines of the fields we must not pass on
(hop-by-hop; the parser's callback names them, so only those lines are cut out), plus our Connection and
framing, in the same write as the first body bytes. The body then goes out as received:
- Content-Length: counted by us and forwarded raw; the parser also reads it, with no callback (llhttp skips it
  in C), so that it is at the next response's start without being replaced;
- chunked: parsed by a second llhttp parser (`Dechunker`, made for that response) and re-chunked on our side
  (or de-chunked for an HTTP/1.0 client), so that what the client receives is always well framed, whatever
  bytes the upstream adds after its last chunk;
- neither: read until the upstream closes, and the client connection closes after it.
Responses with no body (to HEAD, 1xx, 204, 304) end at the head. 1xx responses are dropped (we answer
`Expect: 100-continue` ourselves), as nginx does.

A connection that dies before the first response byte tells the client side, which may retry elsewhere; one
that dies mid-body makes the client connection close, so a truncated body never looks complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

import httptools

from pyngress.runtime import http1
from pyngress.runtime.downstream import PAUSE_BUFFER, PAUSE_UPSTREAM, Downstream
from pyngress.runtime.retrying import INVALID_HEADER, TIMEOUT

if TYPE_CHECKING:
    from pyngress.model import Endpoint
    from pyngress.runtime.client_side import ClientSide
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.pool import UpstreamPool

HEAD: Final = 0  # waiting for (the rest of) a response head
LENGTH: Final = 1
CHUNKED: Final = 2
UNTIL_CLOSE: Final = 3
SWITCHED: Final = 4  # a 101 answer to an `Upgrade: websocket` request: the connection becomes a tunnel (issue 4)

MAX_RESPONSE_HEAD: Final = 64 * 1024

# Response header name, as the upstream spells it -> what we do with it. Learns each spelling once (bounded).
_FORWARD: Final = 0
_DROP: Final = 1
_CONTENT_LENGTH: Final = 2
_TRANSFER_ENCODING: Final = 3
_CONNECTION: Final = 4
_RESPONSE_ROLES: Final[dict[bytes, int]] = {}
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close"})  # Connection values that name no other field


def _response_role(name: bytes) -> int:
    lower = name.lower()
    if lower == b"content-length":
        role = _CONTENT_LENGTH
    elif lower == b"transfer-encoding":
        role = _TRANSFER_ENCODING
    elif lower == b"connection":
        role = _CONNECTION
    else:
        role = _DROP if lower in http1.RESPONSE_HOP_BY_HOP or lower.startswith(b"proxy-") else _FORWARD
    if len(_RESPONSE_ROLES) < 4096:
        _RESPONSE_ROLES[name] = role
    return role


# The client side is a `Downstream` (HTTP/1.1) or an HTTP/2 stream, seen through the ClientSide protocol. In the
# compiled build a call through a protocol is a Python method call; narrowed to the native Downstream class it
# is a direct C call. These three run once per response, so they are narrowed (the branches look alike on
# purpose: they differ in what mypyc makes of them).


def _should_close(client: ClientSide, ex: Exchange) -> bool:
    if isinstance(client, Downstream):
        return client.should_close(ex)
    return client.should_close(ex)


def _write(client: ClientSide, data: bytes) -> None:
    if isinstance(client, Downstream):
        client.write(data)
    else:
        client.write(data)


def _finished(client: ClientSide, ex: Exchange) -> None:
    if isinstance(client, Downstream):
        client.finished(ex)
    else:
        client.finished(ex)


class Dechunker:
    """The body of one chunked response: httptools parses it (fed the response's head first, to be in the body
    state); `out` collects it framed for the client."""

    __slots__ = ("done", "extra", "http10", "out", "parser")

    def __init__(self, head: bytes, http10: bool) -> None:
        self.out: list[bytes] = []
        self.http10 = http10
        self.done = False  # the last chunk arrived
        self.extra = False  # bytes followed the last chunk: the connection is out of step
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(head)

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True

    def on_body(self, body: bytes) -> None:
        if self.http10:
            self.out.append(body)
        else:
            self.out += (http1.chunk_header(len(body)), body, b"\r\n")

    def on_message_complete(self) -> None:
        if not self.done and not self.http10:
            self.out.append(http1.LAST_CHUNK)
        self.done = True


def without_fields(head: bytes, names: list[bytes]) -> bytes:
    """`head` without the field lines named `names`, spelled as in the head (from the parser's callback)."""
    for name in names:
        start = head.find(b"\r\n" + name + b":")
        if start >= 0:
            end = head.find(b"\r\n", start + 2)
            head = head[:start] + head[end:]
    return head


def without_named(head: bytes, lower_names: set[bytes]) -> bytes:
    """`head` without the fields whose lower-cased name is in `lower_names` (a Connection header's options)."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0], *(line for line in lines[1:] if line.partition(b":")[0].lower() not in lower_names)]
    return b"\r\n".join(kept) + b"\r\n\r\n"


class Upstream:
    def __init__(self, pool: UpstreamPool, endpoint: Endpoint, key: str = "") -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.key = key or endpoint.key  # pool key: the endpoint's, plus a suffix for TLS connections
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.requests = 0  # responses completed on this connection
        self.idle_since = 0.0
        self.last_activity = 0.0
        self.write_paused_since = -1.0
        self.broken = False  # must not be reused
        self._parser = httptools.HttpResponseParser(self)  # heads, and counted bodies (no body callback)
        self._parser_clean = True  # False while the parser is inside a message we stopped feeding
        self._dechunker: Dechunker | None = None  # the current response's chunked body
        self._mode = HEAD
        self._head_buf = b""
        self._received = False  # any byte of the current response has arrived
        self._head = b""  # the response head as received
        self._cuts: list[bytes] | None = None  # names of its fields that are not forwarded
        self._content_length = -1
        self._te: bytes | None = None
        self._connection: bytes | None = None
        self._remaining = 0
        self.record = pool.health.record(endpoint.key)  # issue 7: passive health and attempt counting
        self._retry_status = 0  # a response status the route retries (http_5xx), seen in the head

    # -- connection events -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.last_activity = self.pool.clock.now

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.broken = True
        self.pool.forget(self)
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        ex.upstream = None
        client = ex.client
        if client.gone:
            return
        if self._mode == UNTIL_CLOSE:
            self._complete(ex)
        elif ex.response_started:
            self.pool.health.failed(self.record)  # a pod dying mid-response counts against it too
            client.close()  # mid-body: the client sees a truncated response, never a complete one
        elif self.requests and not self._received and ex.replayable and ex.idempotent:
            # A pooled connection the upstream had closed (keep-alive race): send again on a fresh one.
            # Not for POST and the like: the upstream may have acted on it before closing.
            client.dispatch_again(ex)
        else:
            self.pool.health.failed(self.record)
            client.retry(ex, 502)

    def eof_received(self) -> bool:
        return False  # close: the connection_lost that follows decides what the close means

    def pause_writing(self) -> None:
        self.write_paused_since = self.pool.clock.now
        if self.ex is not None:
            self.ex.client.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self.write_paused_since = -1.0
        if self.ex is not None:
            self.ex.client.resume(PAUSE_UPSTREAM)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # -- sending the request -----------------------------------------------------------------------------

    def attach(self, ex: Exchange) -> None:
        """Send `ex` on this connection; it becomes ours until its response is complete."""
        assert self.transport is not None
        self.ex = ex
        ex.upstream = self
        self.record.attempts += 1
        self._mode = HEAD
        self._received = False
        self.last_activity = self.pool.clock.now
        pending = ex.take_pending()
        if pending:
            self.transport.writelines([ex.head, *pending])
            ex.client.resume(PAUSE_BUFFER)
        else:
            self.transport.write(ex.head)

    def send(self, pieces: Iterable[bytes]) -> None:
        if self.transport is not None:
            self.last_activity = self.pool.clock.now
            self.transport.writelines(pieces)

    def abandon(self) -> None:
        """The client went away mid-exchange: this connection cannot be reused."""
        self.ex = None
        self.close()

    # -- receiving the response ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.pool.clock.now
        mode = self._mode
        if self.ex is None:  # bytes nobody asked for: the connection is out of step
            self.abandon()
        elif mode == LENGTH:
            self._forward_counted(data)
        elif mode == HEAD:
            self._received = True
            self._read_head(data)
        elif mode == CHUNKED:
            self._feed_chunked(data)
        else:
            self.ex.client.write(data)

    def _read_head(self, data: bytes) -> None:
        buf = whole = self._head_buf + data if self._head_buf else data
        while self._mode == HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                # not HTTP/1.x at all (an HTTP/2-only pod, e.g. gRPC, sends its SETTINGS frame): fail now
                # rather than wait for a head that never comes (issue 4); checked only while a head is partial
                if len(buf) > MAX_RESPONSE_HEAD or not b"HTTP/".startswith(buf[:5]):
                    self._fail(502)
                else:
                    self._head_buf = buf
                return
            head, buf = buf[: end + 4], buf[end + 4 :]
            self._head_buf = b""
            self._head = head
            try:
                self._parser.feed_data(head)
            except httptools.HttpParserUpgrade:
                pass  # a 101 head: on_headers_complete has decided what it means
            except httptools.HttpParserError:
                self._fail(502)
                return
            # a 1xx head leaves us in HEAD mode: the final response follows
        if self._mode == SWITCHED:
            self._switch(buf)
            return
        if self._retry_status and self._retry_elsewhere():
            return
        # `whole`: the bytes as read, when they are exactly this head and what follows it (no 1xx before)
        self._start_response(buf, whole if len(whole) == len(self._head) + len(buf) else b"")

    def _retry_elsewhere(self) -> bool:
        """The head's status is one the route retries: drop this response for another attempt if allowed."""
        status, self._retry_status = self._retry_status, 0
        ex = self.ex
        if ex is None or not ex.client.may_retry_status(ex, status):
            return False
        self.abandon()  # the unread body makes this connection unusable
        ex.upstream = None
        ex.client.next_attempt(ex, status)
        return True

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only heads reach this parser (chunked bodies and their trailers go to the Dechunker).
        role = _RESPONSE_ROLES.get(name)
        if role is None:
            role = _response_role(name)
        if role == _FORWARD:
            return  # forwarded with the head as it is
        if role == _CONTENT_LENGTH:
            self._content_length = int(value)
            return
        cuts = self._cuts
        if cuts is None:
            cuts = self._cuts = []
        cuts.append(name)
        if role == _TRANSFER_ENCODING:
            self._te = value if self._te is None else self._te + b"," + value
        elif role == _CONNECTION:
            self._connection = value if self._connection is None else self._connection + b"," + value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        ex = self.ex
        assert ex is not None
        if status < 200:
            if status == 101 and ex.upgrade is not None:
                self._mode = SWITCHED
                return
            self._reset_head()  # informational: dropped; the final response follows
            return
        ex.status = status
        rec = self.record  # issue 7: passive health sees every final status
        if status >= 500:
            self.pool.health.failed(rec)
        elif rec.consecutive or rec.probation:
            self.pool.health.succeeded(rec)
        if status >= 400 and ex.route is not None and status in ex.route.retry.statuses:
            self._retry_status = status
        if not self._parser.should_keep_alive():
            self.broken = True
        if not http1.body_allowed(status, ex.method):
            self._mode = LENGTH  # a head-only response: nothing to count
            self._remaining = 0
            if ex.method == b"HEAD" and status not in (204, 304):
                self._parser_clean = False  # it expects the body its head announced: replaced when done
        elif self._te is not None:
            chunked = self._te.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            self._mode = CHUNKED if chunked else UNTIL_CLOSE
            self._parser_clean = False
            if chunked:
                self._dechunker = Dechunker(self._head, ex.http10)
        elif self._content_length >= 0:
            self._mode = LENGTH
            self._remaining = self._content_length
        else:
            self._mode = UNTIL_CLOSE
            self._parser_clean = False

    # -- forwarding ------------------------------------------------------------------------------------

    def _start_response(self, rest: bytes, whole: bytes = b"") -> None:
        """`rest`: the bytes after the head; `whole`: head and rest as they were read, or b"" (see below)."""
        ex = self.ex
        assert ex is not None
        ex.response_started = True
        client = ex.client
        mode = self._mode
        close = _should_close(client, ex) or mode == UNTIL_CLOSE or (mode == CHUNKED and ex.http10)
        ex.close_after = close
        http10 = ex.http10
        received = self._head
        head = self._forwarded_head(not close and not http10)
        if not head.startswith(b"HTTP/1.1 "):
            head = b"HTTP/1.1" + head[8:]
        if ex.set_cookie is not None or ex.hsts is not None or close or mode == CHUNKED or http10:
            head = head[:-2] + b"".join((ex.set_cookie or b"", ex.hsts or b"",
                                         b"Transfer-Encoding: chunked\r\n" if mode == CHUNKED and not http10
                                         else b"",
                                         b"Connection: close\r\n\r\n" if close
                                         else b"Connection: keep-alive\r\n\r\n" if http10 else b"\r\n"))
        if mode == LENGTH:
            remaining = self._remaining
            # the common case, a whole response in one read with nothing to change: forwarded without a copy
            if head is not received or len(rest) != remaining:
                whole = b""
            if len(rest) > remaining:
                rest = self._clip(rest)
            if rest and self._parser_clean:
                self._parser.feed_data(rest)  # no callbacks: only keeps it in step (see the module's doc)
            _write(client, whole or head + rest)
            self._remaining = remaining = remaining - len(rest)
            if not remaining:
                self._complete(ex)
        elif mode == CHUNKED:
            _write(client, head)
            self._feed_chunked(rest)
        else:
            _write(client, head + rest)

    def _forwarded_head(self, keep_alive: bool) -> bytes:
        """The response head as received, minus the fields not forwarded; the per-response state is reset.
        `keep_alive`: the client connection stays open, over HTTP/1.1."""
        head, cuts, connection = self._head, self._cuts, self._connection
        self._head, self._cuts, self._te, self._connection, self._content_length = b"", None, None, None, -1
        # The most common hop-by-hop field, the upstream's lone "Connection: keep-alive", says for our hop what
        # we would say ourselves (nginx sends it too): kept rather than cut and added again.
        if cuts is not None and not (keep_alive and len(cuts) == 1 and connection is not None
                                     and (connection == b"keep-alive" or connection.lower() == b"keep-alive")):
            head = without_fields(head, cuts)
        if connection is not None and connection.lower() not in _PLAIN_CONNECTION:
            # RFC 9110 7.6.1: the fields a Connection header names are hop-by-hop too
            named = set(http1.connection_tokens(connection)) - {b"close", b"keep-alive"}
            if named:
                head = without_named(head, named)
        return head

    def _switch(self, rest: bytes) -> None:
        """101 to a WebSocket upgrade: the 101 head goes to the client, then both connections become a tunnel
        (runtime.tunnel). This connection leaves the pool for good."""
        ex, transport = self.ex, self.transport
        assert ex is not None and transport is not None
        head = self._forwarded_head(False)[:-2] + b"Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        self.ex = None
        ex.upstream = None
        ex.response_started = True
        self.broken = True
        self.requests += 1
        ex.client.tunnel(ex, transport, head, rest)

    def _forward_counted(self, data: bytes) -> None:
        body = self._clip(data)
        if self._parser_clean:
            self._parser.feed_data(body)
        assert self.ex is not None
        _write(self.ex.client, body)
        self._counted(len(body))

    def _clip(self, data: bytes) -> bytes:
        if len(data) <= self._remaining:
            return data
        self.broken = True  # the upstream sent more than it announced: never reuse this connection
        return data[: self._remaining]

    def _counted(self, size: int) -> None:
        self._remaining -= size
        if self._remaining == 0:
            assert self.ex is not None
            self._complete(self.ex)

    def _feed_chunked(self, data: bytes) -> None:
        dechunker = self._dechunker
        assert dechunker is not None
        try:
            dechunker.parser.feed_data(data)
        except httptools.HttpParserError:
            self.broken = True
            assert self.ex is not None
            self.ex.client.close()  # the head is out already: all we can do is cut the response short
            self.abandon()
            return
        out, dechunker.out = dechunker.out, []
        ex = self.ex
        assert ex is not None
        if out:
            ex.client.writelines(out)
        if dechunker.done:
            if dechunker.extra:  # a second message right after the first: the upstream is out of step
                self.broken = True
            self._complete(ex)

    def _reset_head(self) -> None:
        self._head, self._cuts, self._te, self._connection, self._content_length = b"", None, None, None, -1

    def _complete(self, ex: Exchange) -> None:
        """The response is fully forwarded: free this connection first, then let the client go on."""
        self.ex = None
        ex.upstream = None
        self.requests += 1
        self._mode = HEAD
        self._dechunker = None
        if not self._parser_clean:
            self._parser = httptools.HttpResponseParser(self)
            self._parser_clean = True
        if self.broken or not ex.request_done or self.transport is None:
            self.close()
        else:
            self.pool.release(self)
        _finished(ex.client, ex)

    def _fail(self, status: int) -> None:
        """A bad response head: answer the client ourselves and drop this connection."""
        ex = self.ex
        self.abandon()
        self.pool.health.failed(self.record)
        if ex is not None:
            ex.upstream = None
            ex.client.retry(ex, status, INVALID_HEADER)  # answers `status` unless invalid_header allows a retry

    def check_timeouts(self, now: float, read_timeout: float, send_timeout: float) -> None:
        """Called by the server's ticker for connections with an exchange in flight."""
        ex = self.ex
        if ex is None:
            return
        stalled_send = self.write_paused_since >= 0 and now - self.write_paused_since > send_timeout
        waiting = self.write_paused_since < 0 and now - self.last_activity > read_timeout
        if not (stalled_send or waiting):
            return
        self.abandon()
        ex.upstream = None
        if ex.response_started:
            ex.client.close()
        else:
            self.pool.health.failed(self.record)
            ex.client.retry(ex, 504, TIMEOUT)

    def close(self) -> None:
        self.broken = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()
