"""WebSocket over HTTP/2 (RFC 8441 extended CONNECT) to an HTTP/1.1 pod (issue 4).

We announce SETTINGS_ENABLE_CONNECT_PROTOCOL. A client then opens a WebSocket as a stream:
`:method CONNECT`, `:protocol websocket`, `:path`, `:authority`, `sec-websocket-version` (and optionally
-protocol and -extensions), no Sec-WebSocket-Key. `H2Stream` turns it into an HTTP/1.1 upgrade request (GET,
`Upgrade: websocket`, a fresh Sec-WebSocket-Key, RFC 8441 5) routed and balanced like any request. When the pod
answers 101, `open_tunnel` answers the stream with 200 (plus the pod's Sec-WebSocket-Protocol and
-Extensions) and from then on the stream's DATA is the byte stream of the WebSocket connection:
- client DATA is written to the pod's socket; its flow-control credit is handed back at once, or, while the
  pod's socket buffer is over its high-water mark, once it drains;
- pod bytes become DATA frames, sent as the client's window allows; over 64 KiB kept, the pod's socket stops
  being read until the window opens;
- END_STREAM from the client is an EOF to the pod; the pod's EOF ends the stream; a reset or a lost
  connection on either side closes the other.
Any other answer from the pod is relayed as the stream's response, as for HTTP/1.1.

Shutdown (issue 7), as for HTTP/1.1 tunnels (`runtime.tunnel`): when the server drains, or
worker-shutdown-timeout after the pod left the configuration (`H2Downstream.retain`), the client gets a close
frame 1001 (Going Away) as DATA and the pod a masked one, each at its direction's next frame boundary (both
directions follow their frames from the first byte, `ws_frames.FrameTracker`). After its close frame a
direction relays nothing more; its credit is still handed back. Once both ends have answered (a close frame, the
client's END_STREAM, the pod's EOF), or `CLOSE_HANDSHAKE_TIMEOUT` after the drain began, the stream ends
(END_STREAM after the close frame) and the pod's socket closes.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import TYPE_CHECKING

from pyngress.runtime.tunnel import CLOSE_HANDSHAKE_TIMEOUT
from pyngress.runtime.ws_frames import CLOSE, FrameTracker, close_frame

if TYPE_CHECKING:
    from pyngress.policy.limits import ConnectionSlots
    from pyngress.runtime.h2_stream import H2Stream

_PASSED_ON = (b"sec-websocket-protocol", b"sec-websocket-extensions")


def websocket_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def response_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of the pod's 101 that the client needs (the subprotocol and extensions it agreed to)."""
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in _PASSED_ON:
            fields.append((name.strip().lower(), value.strip()))
    return fields


class PodSide(asyncio.Protocol):
    """The pod's socket after its 101: what it sends goes to the client stream as DATA."""

    def __init__(self, stream: H2Stream, transport: asyncio.Transport) -> None:
        self.stream = stream
        self.transport = transport
        self.unacked = 0  # client bytes written while the pod's buffer was full: credit handed back later
        self.write_paused = False
        self.closed = False
        ex = stream.ex
        self.endpoint_key = ex.endpoint.key if ex is not None and ex.endpoint is not None else ""
        self.to_client = FrameTracker()  # the pod's frames
        self.to_pod = FrameTracker()  # the client's frames
        self.goodbye: asyncio.TimerHandle | None = None  # draining: the handshake's deadline
        self.client_cut = self.pod_cut = False  # the close frame went to the client / to the pod
        self.client_answered = self.pod_answered = False
        self.client_ended = False  # END_STREAM from the client, passed on as an EOF: nothing more to the pod
        self.hold: tuple[ConnectionSlots, object] | None = None  # issue 5: the limit-connections slot, while open

    def _release(self) -> None:
        hold, self.hold = self.hold, None
        if hold is not None:
            hold[0].release(hold[1])

    def data_received(self, data: bytes) -> None:
        self.stream.tunnel_activity()
        if self.goodbye is not None:
            self._pod_while_stopping(data)
            return
        self.to_client.feed(data)
        self.stream.on_body(data)
        self.stream.connection.flush()

    def eof_received(self) -> bool:
        if self.goodbye is not None:
            return False  # the pod is done; the stream waits for the client's answer (connection_lost)
        self.stream.response_ended = True
        self.stream.send_pending()
        self.stream.connection.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release()
        if self.goodbye is not None and not self.stream.response_ended:
            self.pod_answered = True
            self._maybe_finish()
            return
        if not self.stream.response_ended:
            self.stream.close()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.unacked:
            unacked, self.unacked = self.unacked, 0
            self.stream.connection.ack(unacked, self.stream.stream_id)
            self.stream.connection.flush()

    # -- from the client stream ---------------------------------------------------------------------------

    def client_data(self, data: bytes, flow_controlled: int) -> None:
        self.stream.tunnel_activity()
        if self.closed:
            self.stream.connection.ack(flow_controlled, self.stream.stream_id)
            return
        if self.goodbye is not None:
            data = self._client_while_stopping(data)
            if not data:
                self.stream.connection.ack(flow_controlled, self.stream.stream_id)
                return
        else:
            self.to_pod.feed(data)
        self.transport.write(data)
        if self.write_paused:
            self.unacked += flow_controlled
        else:
            self.stream.connection.ack(flow_controlled, self.stream.stream_id)

    def client_end(self) -> None:
        self.client_ended = True
        if not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()
        if self.goodbye is not None:
            self.client_answered = True
            self._maybe_finish()

    def close(self) -> None:
        self._release()
        if self.goodbye is not None:
            self.goodbye.cancel()
        if not self.closed:
            self.closed = True
            self.transport.close()

    # -- shutdown ------------------------------------------------------------------------------------------

    def going_away(self) -> None:
        if self.goodbye is not None or self.closed or self.stream.response_ended:
            return
        self.goodbye = self.stream.server.loop.call_later(CLOSE_HANDSHAKE_TIMEOUT, self._finish)
        if self.to_client.at_boundary:
            self._cut_client(self.to_client.opcode == CLOSE)
        if self.to_pod.at_boundary or self.client_ended:
            self._cut_pod(self.to_pod.opcode == CLOSE or self.client_ended)
        self.stream.connection.flush()

    def _pod_while_stopping(self, data: bytes) -> None:
        for end, opcode in self.to_client.ends(data):
            if not self.client_cut:
                self.stream.on_body(data[:end])
                self._cut_client(opcode == CLOSE)
            elif opcode == CLOSE:
                self.pod_answered = True
                self._maybe_finish()
        if not self.client_cut:
            self.stream.on_body(data)
        self.stream.connection.flush()

    def _client_while_stopping(self, data: bytes) -> bytes:
        """What of the client's `data` still goes to the pod (the rest of the frame in progress)."""
        relayed = b"" if self.pod_cut else data
        for end, opcode in self.to_pod.ends(data):
            if not self.pod_cut:
                relayed = data[:end]
                self._cut_pod(opcode == CLOSE, after=relayed)
            elif opcode == CLOSE:
                self.client_answered = True
                self._maybe_finish()
        return relayed if not self.pod_cut else b""

    def _cut_client(self, already_closed: bool) -> None:
        self.client_cut = True
        if already_closed:  # the pod's own close frame went through: that is its answer too
            self.pod_answered = True
        else:
            self.stream.on_body(close_frame(masked=False))
        self.transport.resume_reading()  # nothing more is relayed to the client: read the pod's answer
        self._maybe_finish()

    def _cut_pod(self, already_closed: bool, after: bytes = b"") -> None:
        self.pod_cut = True
        if after:
            self.transport.write(after)
        if already_closed:
            self.client_answered = True
        elif not self.closed:
            self.transport.write(close_frame(masked=True))
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        pod_done = self.closed or (self.pod_cut and self.pod_answered)
        client_done = self.client_cut and self.client_answered
        # a pod gone before its direction reached a frame boundary leaves the client nothing to wait for
        if pod_done and (client_done or (self.closed and not self.client_cut)):
            self._finish()

    def _finish(self) -> None:
        """The handshake is over (or its time is): END_STREAM after what was sent, and the pod's socket closes."""
        if self.goodbye is not None:
            self.goodbye.cancel()
        if not self.stream.response_ended:
            self.stream.response_ended = True
            self.stream.send_pending()
            self.stream.connection.flush()


def open_tunnel(stream: H2Stream, upstream: asyncio.Transport, head: bytes, rest: bytes) -> PodSide:
    """The pod said 101 to the translated upgrade: answer the stream with 200 and start relaying."""
    pod = PodSide(stream, upstream)
    pod.to_client.feed(rest)  # the pod's first WebSocket bytes
    upstream.set_protocol(pod)
    stream.connection.conn.send_headers(stream.stream_id, [(b":status", b"200"), *response_fields(head)])
    if rest:
        stream.on_body(rest)
    stream.connection.flush()
    upstream.resume_reading()
    return pod
