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
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import TYPE_CHECKING

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
        self.hold: tuple[ConnectionSlots, object] | None = None  # issue 5: the limit-connections slot, while open

    def _release(self) -> None:
        hold, self.hold = self.hold, None
        if hold is not None:
            hold[0].release(hold[1])

    def data_received(self, data: bytes) -> None:
        self.stream.tunnel_activity()
        self.stream.on_body(data)
        self.stream.connection.flush()

    def eof_received(self) -> bool:
        self.stream.response_ended = True
        self.stream.send_pending()
        self.stream.connection.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release()
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
        self.transport.write(data)
        if self.write_paused:
            self.unacked += flow_controlled
        else:
            self.stream.connection.ack(flow_controlled, self.stream.stream_id)

    def client_end(self) -> None:
        if not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        self._release()
        if not self.closed:
            self.closed = True
            self.transport.close()


def open_tunnel(stream: H2Stream, upstream: asyncio.Transport, head: bytes, rest: bytes) -> PodSide:
    """The pod said 101 to the translated upgrade: answer the stream with 200 and start relaying."""
    pod = PodSide(stream, upstream)
    upstream.set_protocol(pod)
    stream.connection.conn.send_headers(stream.stream_id, [(b":status", b"200"), *response_fields(head)])
    if rest:
        stream.on_body(rest)
    stream.connection.flush()
    upstream.resume_reading()
    return pod
