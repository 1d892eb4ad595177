"""WebSocket over HTTP/1.1: after the upstream's 101, a raw byte relay between client and pod (issue 4).

How a connection gets here:
1. `request_head` forwards `Upgrade: websocket` (GET, HTTP/1.1, no body) with `Connection: upgrade` and marks
   the Exchange (`ex.upgrade`); every other Upgrade (h2c above all) is dropped, as before.
2. llhttp stops at the end of that request head (`HttpParserUpgrade`). `hold` keeps the bytes after the head
   aside and stops reading the client: until the pod says 101 they must not reach it (a pod that answers
   anything else would read them as a next request).
3. The pod answers. Anything but 101 is relayed as an ordinary response and the connection closes after it.
   On 101 `Upstream._switch` hands both transports to `take_over`: the client gets the 101 head, the held
   bytes go to the pod, and both transports get a `_Half` protocol each.

The relay copies bytes as they arrive (no buffering of ours, no frame parsing: extensions and compression are
between the two ends). Backpressure both ways: a side whose write buffer is full pauses reading on the other.
Half-close: an EOF from one side is passed on with write_eof, and the tunnel closes when both sides have sent
one, or either side closes. Idle timeout: `proxy-read-timeout` without a byte in either direction (as
ingress-nginx, whose proxy_read_timeout is what closes idle WebSockets), enforced by the server's ticker.
A reload keeps the tunnel unless its endpoint left the configuration; draining leaves it open until the grace
period ends (nginx keeps WebSockets until worker-shutdown-timeout the same way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING

from pyngress.runtime import flow

if TYPE_CHECKING:
    from pyngress.model import ProxySettings
    from pyngress.policy.limits import ConnectionSlots
    from pyngress.runtime.downstream import Downstream
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.server import ProxyServer

PAUSE_SWITCHING = 8  # a Downstream pause reason: waiting for the upstream's answer to an upgrade


def hold(client: Downstream, ex: Exchange, rest: bytes) -> None:
    """The upgrade request's head is parsed: nothing after it is HTTP. Keep `rest` until the answer."""
    ex.upgrade = rest
    client.closing = True  # llhttp has stopped; if the answer is not 101 the connection ends after it
    client.pause(PAUSE_SWITCHING)


def take_over(client: Downstream, ex: Exchange, upstream: asyncio.Transport, head: bytes, rest: bytes) -> None:
    """The pod said 101: relay `head` (the 101) and switch both connections to a tunnel."""
    transport = client.transport
    if transport is None or client.gone or ex.endpoint is None:
        upstream.close()
        return
    client.end_attempt(ex, ok=True)
    hold = flow.hand_over(ex)  # issue 5: the tunnel keeps the request's limit-connections slot while open
    client.queue.clear()
    client.gone = True  # the Downstream object is retired; the tunnel owns the transport now
    Tunnel(client.server, transport, upstream, ex.endpoint.key, hold)
    client.server.connection_closed(client)
    transport.write(head + rest if rest else head)
    if ex.upgrade:
        upstream.write(ex.upgrade)
    transport.resume_reading()


class Tunnel:
    def __init__(self, server: ProxyServer, client: asyncio.Transport, upstream: asyncio.Transport,
                 endpoint_key: str, hold: tuple[ConnectionSlots, object] | None = None) -> None:
        self.server = server
        self.hold = hold  # limit-connections: the upgrade request's slot, given back when the tunnel closes
        self.endpoint_key = endpoint_key
        self.last_activity = server.now
        self.closed = False
        self._eofs = 0
        self.client_half = _Half(self, client, upstream)
        self.upstream_half = _Half(self, upstream, client)
        client.set_protocol(self.client_half)
        upstream.set_protocol(self.upstream_half)
        server.session_opened(self)

    def half_closed(self) -> None:
        self._eofs += 1
        if self._eofs == 2:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client_half.transport.close()
        self.upstream_half.transport.close()
        self._release()
        self.server.session_closed(self)

    def _release(self) -> None:
        hold, self.hold = self.hold, None
        flow.release_hold(hold)

    # -- the server's Session interface --------------------------------------------------------------------

    def tick(self, now: float, settings: ProxySettings) -> None:
        if now - self.last_activity > settings.proxy_read_timeout:
            self.close()

    def retain(self, endpoint_keys: Collection[str]) -> None:
        if self.endpoint_key not in endpoint_keys:
            self.close()  # its pod left the configuration

    def drain(self) -> None:
        pass  # kept until the grace period ends

    def abort(self) -> None:
        self.closed = True
        self.client_half.transport.abort()
        self.upstream_half.transport.abort()
        self._release()
        self.server.session_closed(self)


class _Half(asyncio.Protocol):
    """One direction's reader: what `transport` receives goes to `peer`."""

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport, peer: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer = peer

    def data_received(self, data: bytes) -> None:
        self.tunnel.last_activity = self.tunnel.server.now
        self.peer.write(data)

    def eof_received(self) -> bool:
        if self.peer.can_write_eof() and not self.peer.is_closing():
            self.peer.write_eof()
            self.tunnel.half_closed()
            return True  # keep our own sending side open: the other direction may go on
        self.tunnel.close()
        return False

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading what fills it
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()


