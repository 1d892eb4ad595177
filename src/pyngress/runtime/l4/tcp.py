"""TCP stream relay: one client connection spliced to one pod connection, bytes passed on as they come.

Theory of operation. A `TcpClient` (the accepted connection) reads its listener's `StreamConfig` once, so a
reload never changes a connection half way. Its life:

1. PROXY (only when the service accepts it): bytes are gathered until `proxy_protocol.parse` returns a header;
   the header's source address then stands for the client (balancing, affinity, the PROXY header we send). A
   malformed header, or none within `proxy-protocol-header-timeout`, closes the connection.
2. Connect: whatever the client sends meanwhile is kept (its reading is paused past 256 KiB), the balancer
   picks an endpoint and we connect to it within `proxy-connect-timeout` (enforced by the runtime's ticker,
   which cancels the attempt: no timer per connection). A failed or timed-out connect marks
   that endpoint tried and picks another (`PickContext.exclude`), up to `proxy-stream-next-upstream-tries`
   attempts within `proxy-stream-next-upstream-timeout`, as nginx's stream proxy does. With no endpoint left,
   the client is reset (it learns at once, as with a refused connection).
3. Relay: on connect we write our PROXY header (if asked), then the bytes kept, then resume the client.
   `data_received` on either side is one `write` on the other: no buffering of our own. Backpressure is the
   transports': when one side's write buffer passes its high-water mark its `pause_writing` pauses reading on
   the other side, and `resume_writing` resumes it, so memory stays bounded by two transport buffers whatever
   the speed difference.
4. Half-close: an EOF from one side becomes `write_eof` (shutdown SHUT_WR) on the other, after its buffered
   bytes; `eof_received` returns True so the reverse direction keeps flowing. When both directions have seen
   EOF, both transports are closed. A reset on one side aborts the other.

Idle connections: every read sets `seen`; the runtime's ticker closes a connection that was not seen for
`proxy-stream-timeout` (the check costs one attribute store per read, nothing per write). In-flight counts
per endpoint (least_conn) are kept in the runtime's `EndpointStatsRegistry`: started on a connect attempt,
finished when it fails or when the relayed connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from pyngress.balancing import PickContext
from pyngress.model import Endpoint
from pyngress.runtime import proxy_protocol
from pyngress.runtime.l4.config import StreamConfig, encode_proxy_header

if TYPE_CHECKING:
    from pyngress.runtime.l4.runtime import StreamRuntime

log = logging.getLogger("pyngress.l4")

HEADER, CONNECTING, RELAYING, CLOSED = range(4)
PENDING_LIMIT = 256 * 1024  # client bytes kept while connecting to the pod before reading is paused


class TcpClient(asyncio.Protocol):
    """The accepted side; owns the relay. See the module docstring."""

    def __init__(self, runtime: StreamRuntime, config: StreamConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.state = HEADER
        self.seen = True  # read since the last tick (the ticker's idle check)
        self.idle_since = runtime.loop.time()  # exact: the PROXY header deadline counts from the accept
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None  # set once relaying
        self.forward: Callable[[bytes], None] = self._hold  # where data_received puts bytes: upstream.write
        self.endpoint: Endpoint | None = None
        self.client_address = ("", 0)
        self.local_address = ("", 0)
        self._pending = bytearray()  # bytes read before the upstream was ready (a PROXY header's remainder)
        self._client_eof = self._upstream_eof = False
        self._held = False  # reading paused because too much arrived before the pod connection was ready
        self._connecting: asyncio.Task[None] | None = None
        # loop time at which the current connect attempt has failed; infinite until an attempt starts, so a tick
        # between `_connect` and the task's first step cancels nothing
        self.connect_deadline = math.inf
        self._attempt_expired = False

    # -- client transport callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.client_address = _address(transport.get_extra_info("peername"))
        if self.config.service.send_proxy:  # only the PROXY header we send needs it: save the call otherwise
            self.local_address = _address(transport.get_extra_info("sockname"))
        self.runtime.tcp_opened(self)
        if not self.config.service.accept_proxy:
            self._connect()

    def data_received(self, data: bytes) -> None:  # the hot path: one store, one call
        self.seen = True
        self.forward(data)

    def _hold(self, data: bytes) -> None:
        """Before the pod connection is ready: keep the bytes (and look for the PROXY header). Reading is
        paused only past PENDING_LIMIT: pausing and resuming every new connection would cost two syscalls."""
        self._pending += data
        if self.state == HEADER:
            self._read_proxy_header()
        elif len(self._pending) > PENDING_LIMIT and self.transport is not None and not self._held:
            self._held = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._client_eof = True
        if self.upstream is not None:
            self._shut_upstream()
        elif self.state == HEADER:  # no header will come now
            self.abort()
        return True

    def pause_writing(self) -> None:  # the client is slower than the pod: stop reading the pod
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if self._connecting is not None:
            self._connecting.cancel()
        if self.upstream is not None:
            self.upstream.abort() if exc is not None else self.upstream.close()
        self._finished()

    # -- upstream side, called by TcpUpstream ----------------------------------------------------------

    def upstream_eof(self) -> None:
        self._upstream_eof = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self._client_eof:
                transport.close()
            else:
                transport.write_eof()
        if self._client_eof and self.upstream is not None:
            self.upstream.close()

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED or self.transport is None:
            return
        if exc is not None:
            self.abort()
        else:
            self.transport.close()

    # -- steps ---------------------------------------------------------------------------------------

    def _read_proxy_header(self) -> None:
        try:
            parsed = proxy_protocol.parse(bytes(self._pending))
        except proxy_protocol.ProxyProtocolError as exc:
            log.debug("%s: bad PROXY header from %s: %s", self.config.service.listen_key, self.client_address, exc)
            self.abort()
            return
        if parsed is None:
            return
        header, consumed = parsed
        del self._pending[:consumed]
        if not header.local:
            self.client_address = (header.source_addr, header.source_port)
            self.local_address = (header.dest_addr, header.dest_port)
        self._connect()

    def _connect(self) -> None:
        self.state = CONNECTING
        self._connecting = self.runtime.loop.create_task(self._open_upstream())

    async def _open_upstream(self) -> None:
        config, runtime = self.config, self.runtime
        settings = config.settings
        loop = runtime.loop
        deadline = loop.time() + settings.proxy_stream_next_upstream_timeout
        tries = settings.proxy_stream_next_upstream_tries if settings.proxy_stream_next_upstream else 1
        tried: list[str] = []
        while self.state == CONNECTING:
            endpoint = config.balancer.pick(PickContext(self.client_address[0], tried, now=runtime.now))
            if endpoint is None:
                break
            tried.append(endpoint.key)
            runtime.stats.started(endpoint.key)
            self.endpoint = endpoint  # the attempt's endpoint: `_finished` ends its count if the client goes
            # the ticker cancels the attempt past this (`expire_connect`): no timer per connection
            self.connect_deadline = min(loop.time() + settings.proxy_connect_timeout, deadline)
            failure = await self._attempt(endpoint)
            if failure is None:
                return
            self.endpoint = None
            runtime.stats.finished(endpoint.key, None, loop.time())
            log.debug("%s: connect to %s failed: %r", config.service.listen_key, endpoint.key, failure)
            if (tries and len(tried) >= tries) or loop.time() >= deadline:
                break
        if self.state == CONNECTING:
            log.info("%s: no endpoint of %s accepted the connection from %s (%d tried)",
                     config.service.listen_key, config.service.backend.key, self.client_address[0], len(tried))
            self.abort()

    async def _attempt(self, endpoint: Endpoint) -> Exception | None:
        """One connect to `endpoint`: None when it succeeded (`upstream_made` ran), else why it failed."""
        loop = self.runtime.loop
        try:
            await loop.create_connection(lambda: TcpUpstream(self), endpoint.address, endpoint.port)
        except asyncio.CancelledError:
            if not self._attempt_expired:
                raise  # the client went away
            self._attempt_expired = False
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # our own cancel, used as a timer: the connection goes on with another endpoint
            return None if self.state == RELAYING else TimeoutError("proxy-connect-timeout")
        except OSError as exc:
            return exc
        return None

    def expire_connect(self) -> None:
        """The ticker's verdict: this connect attempt passed `connect_deadline` (proxy-connect-timeout)."""
        if self._connecting is not None and self.state == CONNECTING and not self._attempt_expired:
            self._attempt_expired = True
            self._connecting.cancel()

    def upstream_made(self, transport: asyncio.Transport) -> None:
        """The pod accepted: send the PROXY header and what the client already sent, then relay."""
        if self.state != CONNECTING or self.transport is None:
            transport.abort()  # the client went away while we were connecting
            return
        self._connecting = None
        self.state = RELAYING
        header = encode_proxy_header(self.config.service.send_proxy, self.client_address, self.local_address)
        if header or self._pending:
            transport.write(header + bytes(self._pending))
            self._pending.clear()
        self.upstream = transport
        self.forward = transport.write
        if self._client_eof:
            self._shut_upstream()
        elif self._held:
            self._held = False
            self.transport.resume_reading()

    def _shut_upstream(self) -> None:
        assert self.upstream is not None
        if self._upstream_eof:
            self.upstream.close()
            if self.transport is not None:
                self.transport.close()
        elif self.upstream.can_write_eof():
            self.upstream.write_eof()

    def abort(self) -> None:
        """Reset the client (and the pod connection, if any)."""
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()

    def _finished(self) -> None:
        if self.endpoint is not None:
            self.runtime.stats.finished(self.endpoint.key, None, self.runtime.now)
        self.runtime.tcp_closed(self)


class TcpUpstream(asyncio.Protocol):
    """The pod side: hands everything to its `TcpClient`."""

    __slots__ = ("client", "forward", "transport")

    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        assert client.transport is not None  # made after the client's connection_made
        self.forward = client.transport.write

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client.upstream_made(self.transport)

    def data_received(self, data: bytes) -> None:
        self.client.seen = True
        self.forward(data)

    def eof_received(self) -> bool:
        self.client.upstream_eof()
        return True

    def pause_writing(self) -> None:  # the pod is slower than the client: stop reading the client
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and self.client.state == RELAYING:
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(exc)


def _address(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return ("", 0)
