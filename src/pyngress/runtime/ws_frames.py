"""Where WebSocket frames begin and end in a relayed byte stream (RFC 6455 5.2), and the close frames we send
when the proxy shuts down (issue 7). Pure: no I/O, no clock; it lives beside `http1` and `h2_fields`, the other
wire-format helpers of the protocols the runtime speaks, and is tested without an event loop.

A WebSocket tunnel relays raw bytes and never parses them: extensions, compression and fragmentation are the
two ends' business. Only a shutdown needs to know more: a close frame can be put into a stream only *between*
two frames, and the only way to know where a frame ends is to have followed every frame header since the first
byte after the 101. So each direction of a tunnel keeps a `FrameTracker` from its first byte. What that costs:
a chunk inside a long frame is one subtraction; a chunk holding frames reads each frame's header (2 to 14
bytes: the payload length from the second byte, the 16- or 64-bit extended length, the mask bit). A header
split across two chunks is kept (at most 13 bytes) until the rest arrives.

Frame layout (5.2): byte 0 = FIN, RSV1-3, opcode; byte 1 = MASK bit, 7-bit length; 126 -> a 16-bit length
follows, 127 -> a 64-bit one; then a 4-byte masking key if MASK; then the payload.
"""

from __future__ import annotations

import os
import struct

CLOSE = 0x8  # the close opcode
GOING_AWAY = 1001  # the close status of an endpoint that is going away: a server shutting down (7.4.1)

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class FrameTracker:
    """Follows the frames of one direction of a WebSocket connection, from its first byte."""

    __slots__ = ("_head", "_need", "opcode")

    def __init__(self) -> None:
        self._need = -1  # payload bytes of the current frame still to come; -1: between frames
        self._head = b""  # the start of a frame header split across chunks
        self.opcode = 0  # of the frame being read (or the last one read)

    @property
    def at_boundary(self) -> bool:
        """Between two frames: a close frame can go into the stream now."""
        return self._need < 0 and not self._head

    def feed(self, data: bytes) -> None:
        """Account for `data`, the next bytes of the stream (the relay's per-chunk call)."""
        need = self._need
        if need >= len(data):  # inside one frame's payload: the common case of a large message
            self._need = need - len(data)
            if not self._need:
                self._need = -1
            return
        self._advance(data, None)

    def ends(self, data: bytes) -> list[tuple[int, int]]:
        """Account for `data` like `feed`, and say where frames end in it: (offset just after the frame,
        opcode) for every frame that is complete at that offset, in order."""
        out: list[tuple[int, int]] = []
        self._advance(data, out)
        return out

    def _advance(self, data: bytes, out: list[tuple[int, int]] | None) -> None:
        i, n, need = 0, len(data), self._need
        while True:
            if need >= 0:  # inside a payload
                if need > n - i:
                    self._need = need - (n - i)
                    return
                i += need
                need = -1
                if out is not None:
                    out.append((i, self.opcode))
            if i == n:
                self._need = -1
                return
            if self._head:  # the rest of a header begun in an earlier chunk
                buf = self._head + data[i:i + 14]
                parsed = _header(buf, 0)
                if parsed is None:
                    self._head, self._need = buf, -1
                    return
                size, need, self.opcode = parsed
                i += size - len(self._head)
                self._head = b""
                continue
            if i + 6 <= n and (second := data[i + 1] & 0x7F) < 126:  # a short frame's header, all here
                self.opcode = data[i] & 0x0F
                need = second
                i += 6 if data[i + 1] & 0x80 else 2
                continue
            parsed = _header(data, i)
            if parsed is None:
                self._head, self._need = data[i:], -1
                return
            size, need, self.opcode = parsed
            i += size


def _header(buf: bytes, i: int) -> tuple[int, int, int] | None:
    """(header size, payload length, opcode) of the frame header at `buf[i:]`, or None if it is incomplete."""
    available = len(buf) - i
    if available < 2:
        return None
    second = buf[i + 1]
    length = second & 0x7F
    size = 6 if second & 0x80 else 2
    if length == 126:
        size += 2
        if available < size:
            return None
        length = _U16.unpack_from(buf, i + 2)[0]
    elif length == 127:
        size += 8
        if available < size:
            return None
        length = _U64.unpack_from(buf, i + 2)[0]
    elif available < size:
        return None
    return size, length, buf[i] & 0x0F


def close_frame(status: int = GOING_AWAY, *, masked: bool) -> bytes:
    """A close frame with `status` and no reason. A client's frames are masked (5.3) with a fresh random key:
    what we send to a pod, as the client of that connection; what we send to a client is not."""
    payload = _U16.pack(status)
    if not masked:
        return bytes((0x80 | CLOSE, len(payload))) + payload
    key = os.urandom(4)
    return bytes((0x80 | CLOSE, 0x80 | len(payload))) + key + bytes(b ^ key[j % 4] for j, b in enumerate(payload))


def close_status(frame: bytes) -> int | None:
    """The status code of one complete close frame (for tests and logs); None when it carries none."""
    parsed = _header(frame, 0)
    if parsed is None or parsed[2] != CLOSE or parsed[1] < 2:
        return None
    size = parsed[0]
    high, low = frame[size], frame[size + 1]
    if frame[1] & 0x80:  # masked: the key is the header's last four bytes
        high, low = high ^ frame[size - 4], low ^ frame[size - 3]
    return high << 8 | low
