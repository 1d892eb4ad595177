"""A byte relay between two TCP connections, for `ssl-passthrough` (issue 4/9): TLS from the client to the pod.

`Relay` pairs two `_Half` protocols. Whatever one side receives is written to the other as it comes; nothing
is parsed (the bytes are TLS records we cannot read). Flow control both ways: when a side's write buffer
fills (`pause_writing`), the other side stops reading until it drains. A half-close is passed on
(`write_eof`), so a client that shuts down its sending side still gets the rest of the answer; the relay
ends when both directions have ended or either side is lost, and then closes both. A relay idle both ways
for `proxy-stream-timeout` (600 s) is closed by the server's ticker (`expire_idle`): one flag set per read,
no timer per connection.

The client socket is handed over by the listener untouched (it only peeked at the ClientHello), so the first
bytes the pod receives are the client's ClientHello.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

from pyngress.model import Endpoint


class _Half(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.pending: list[bytes] = []  # received from the peer before our transport existed
        self.eof = False  # this side sent its EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.pending:
            self.transport.writelines(self.pending)
            self.pending = []

    def data_received(self, data: bytes) -> None:
        self.relay.active = True  # the idle clock: see `expire_idle`
        peer = self.peer
        if peer is None or peer.transport is None:
            self._peer_pending().append(data)
        else:
            peer.transport.write(data)

    def _peer_pending(self) -> list[bytes]:
        assert self.peer is not None
        return self.peer.pending

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer is None or peer.eof:
            self.relay.close()
        return True  # keep our sending side open for the answer

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.relay.close()


class Relay:
    """One client connection relayed to one endpoint. `on_close` is told once, when both sides are closed."""

    def __init__(self, on_close: Callable[[Relay], None]) -> None:
        self.client = _Half(self)
        self.upstream = _Half(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._on_close = on_close
        self.closed = False
        self.active = True  # a byte arrived (either side) since the last tick; starts True: stamped on the first
        self.idle_since = 0.0

    async def start(self, sock: socket.socket, endpoint: Endpoint, connect_timeout: float,
                    first: bytes = b"") -> None:
        """Connect to `endpoint`, send it `first` (a PROXY protocol header, issue 5), then take over `sock`.
        Raises OSError/TimeoutError when the pod is unreachable (the caller closes `sock`)."""
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: self.upstream, endpoint.address, endpoint.port),
                               connect_timeout)
        if first and self.upstream.transport is not None:
            self.upstream.transport.write(first)
        try:
            await loop.connect_accepted_socket(lambda: self.client, sock)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for half in (self.client, self.upstream):
            if half.transport is not None:
                half.transport.close()  # flushes what is buffered first
        self._on_close(self)

    def expire(self) -> None:
        """Idle too long: close, or abort when bytes are stuck in a buffer a peer does not drain."""
        halves = (self.client, self.upstream)
        if any(h.transport is not None and h.transport.get_write_buffer_size() for h in halves):
            self.abort()
        else:
            self.close()

    def abort(self) -> None:
        for half in (self.client, self.upstream):
            if half.transport is not None:
                half.transport.abort()
        self.close()


def expire_idle(relays: set[Relay], now: float, timeout: float) -> None:
    """Called by the server's ticker (no timer per connection): a relay in which no byte moved either way for
    `timeout` seconds (`proxy-stream-timeout`, as nginx's proxy_timeout in its stream module) is closed.
    `now` is the tick's time minus one tick, so a relay is never cut early."""
    for relay in list(relays):
        if relay.active:
            relay.active = False
            relay.idle_since = now
        elif now - relay.idle_since > timeout:
            relay.expire()
