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
A reload keeps the tunnel unless its endpoint left the configuration worker-shutdown-timeout ago (then it
closes as at shutdown, below).

Shutdown (issue 7): when the server drains (SIGTERM, after shutdown-grace-period), each tunnel says goodbye the
way a WebSocket server does: the client gets a close frame with status 1001 (Going Away), the pod a masked one
(we are its client), each at the next frame boundary of its direction: a frame being relayed is finished
first, since a close frame in the middle of one would corrupt the stream. Each direction follows its frame
boundaries from its first byte for that (`ws_frames.FrameTracker`; a header read per frame). After its close
frame a direction relays nothing more (the protocol allows nothing after a close) but is still read, to see
the answer: a close frame, or an EOF. When both ends have answered, or `CLOSE_HANDSHAKE_TIMEOUT` after the
drain began, the tunnel closes its sockets. A direction whose end had already sent its own close frame gets
none from us.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING

from pyngress.runtime import flow
from pyngress.runtime.ws_frames import CLOSE, FrameTracker, close_frame

if TYPE_CHECKING:
    from pyngress.model import ProxySettings
    from pyngress.policy.limits import ConnectionSlots
    from pyngress.runtime.downstream import Downstream
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.server import ProxyServer

PAUSE_SWITCHING = 8  # a Downstream pause reason: waiting for the upstream's answer to an upgrade
CLOSE_HANDSHAKE_TIMEOUT = 5.0  # shutdown: how long both ends have to answer our close frames


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
    tunnel = Tunnel(client.server, transport, upstream, ex.endpoint.key, hold)
    client.server.connection_closed(client)
    transport.write(head + rest if rest else head)
    tunnel.upstream_half.frames.feed(rest)  # the pod's first WebSocket bytes
    if ex.upgrade:
        tunnel.client_half.frames.feed(ex.upgrade)  # the client's, held until the 101
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
        self._goodbye: asyncio.TimerHandle | None = None  # set when the drain began: the handshake's deadline
        self.client_half = _Half(self, client, upstream, masked=True)  # the client's bytes, to the pod
        self.upstream_half = _Half(self, upstream, client, masked=False)  # the pod's, to the client
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
        if self._goodbye is not None:
            self._goodbye.cancel()
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
            self.drain()  # its pod left the configuration worker-shutdown-timeout ago: Going Away, both ends

    def drain(self) -> None:
        """Shutdown: a close frame 1001 to each end, at its direction's next frame boundary (see above)."""
        if self.closed or self._goodbye is not None:
            return
        self._goodbye = self.server.loop.call_later(CLOSE_HANDSHAKE_TIMEOUT, self.close)
        self.client_half.going_away()
        self.upstream_half.going_away()

    def answered(self) -> None:
        """Something happened in the goodbye. An end whose handshake is over (it has our close frame and has
        answered, or it is gone) gets its socket closed; when both are over, the tunnel is."""
        client, pod = self.client_half, self.upstream_half
        pod_done = pod.lost or (client.cut and pod.answered)
        client_done = client.lost or (pod.cut and client.answered)
        if pod_done and client_done:
            self.close()
        elif pod_done:
            pod.transport.close()
        elif client_done:
            client.transport.close()  # as a WebSocket server does, once the handshake is over

    def abort(self) -> None:
        self.closed = True
        if self._goodbye is not None:
            self._goodbye.cancel()
        self.client_half.transport.abort()
        self.upstream_half.transport.abort()
        self._release()
        self.server.session_closed(self)


class _Half(asyncio.Protocol):
    """One direction's reader: what `transport` receives goes to `peer`. `masked`: `peer` is the pod, whose
    frames from us must be masked."""

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport, peer: asyncio.Transport, *,
                 masked: bool) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer = peer
        self.masked = masked
        self.frames = FrameTracker()  # where this direction's frames end (see ws_frames)
        self.stopping = False  # draining: a close frame is due to `peer`, or sent
        self.cut = False  # this direction ended with a close frame (ours or its own): nothing more is relayed
        self.answered = False  # our transport's end sent its close frame, or an EOF
        self.lost = False  # draining: our transport's connection is gone
        self.ended = False  # our transport's end sent an EOF, passed on to `peer` (nothing more can go there)

    def data_received(self, data: bytes) -> None:
        self.tunnel.last_activity = self.tunnel.server.now
        if self.stopping:
            self._while_stopping(data)
            return
        self.frames.feed(data)
        self.peer.write(data)

    # -- shutdown --------------------------------------------------------------------------------------------

    def going_away(self) -> None:
        self.stopping = True
        if self.frames.at_boundary or self.ended:
            self._cut(already_closed=self.frames.opcode == CLOSE or self.ended)

    def _while_stopping(self, data: bytes) -> None:
        for end, opcode in self.frames.ends(data):
            if not self.cut:  # the frame in progress at the drain is over: relay its end, then close
                self.peer.write(data[:end])
                self._cut(already_closed=opcode == CLOSE)
            elif opcode == CLOSE:
                self._answer()
        if not self.cut:
            self.peer.write(data)  # still inside the frame that was being relayed

    def _cut(self, *, already_closed: bool) -> None:
        """This direction ends here: with our close frame, unless its end just sent one of its own (which is
        then also its answer)."""
        self.cut = True
        self.transport.resume_reading()  # nothing is relayed any more, so no backpressure: read the answer
        if already_closed:
            self.answered = True
        elif not self.peer.is_closing():
            self.peer.write(close_frame(masked=self.masked))
        self.tunnel.answered()

    def _answer(self) -> None:
        if not self.answered:
            self.answered = True
            self.tunnel.answered()

    def eof_received(self) -> bool:
        self.ended = True
        if self.stopping:
            self._answer()
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
        if self.stopping and not self.tunnel.closed:  # the other end may still owe its answer
            self.lost = True
            self.tunnel.answered()
            return
        self.tunnel.close()


