"""What following WebSocket frame boundaries costs a tunnel (runtime.ws_frames, issue 7), per relayed chunk.

    PYTHONPATH=src python bench/ws_frames.py

Three shapes of traffic: 64 KiB chunks of one large binary message (the tracker only counts), 100-byte
messages arriving one per chunk (one header read per chunk), and 64 KiB chunks packed with 100-byte frames
(655 headers per chunk, the worst case). Compared with what the relay does per chunk anyway: a
`transport.write` of the chunk into a socketpair (the cheapest real write), measured the same way.
"""

from __future__ import annotations

import socket
import struct
import timeit

from pyngress.runtime.ws_frames import FrameTracker


def frame(length: int) -> bytes:
    head = b"\x82" + (bytes((0x80 | length,)) if length < 126 else b"\xfe" + struct.pack("!H", length))
    return head + b"\x01\x02\x03\x04" + bytes(length)


def per_call(fn: object, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    big = FrameTracker()
    big.feed(b"\x82\xff" + struct.pack("!Q", 1 << 62) + b"\x01\x02\x03\x04")
    chunk = bytes(65536)
    small = frame(94)  # 100 bytes with its 6-byte header
    one = FrameTracker()
    packed_chunk = small * 655
    packed = FrameTracker()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    def write_read(data: bytes) -> None:
        a.send(data)
        b.recv(len(data))

    rows = [
        ("64 KiB chunk inside a large message", per_call(lambda: big.feed(chunk), 200_000),
         per_call(lambda: write_read(chunk), 2_000)),
        ("one 100-byte frame per chunk", per_call(lambda: one.feed(small), 500_000),
         per_call(lambda: write_read(small), 50_000)),
        ("64 KiB chunk of 655 100-byte frames", per_call(lambda: packed.feed(packed_chunk), 2_000),
         per_call(lambda: write_read(packed_chunk), 2_000)),
    ]
    a.close()
    b.close()
    print(f"{'traffic':40} {'tracker µs/chunk':>17} {'send+recv µs/chunk':>19} {'ratio':>7}")
    for name, tracked, relayed in rows:
        print(f"{name:40} {tracked:17.3f} {relayed:19.3f} {tracked / relayed:7.1%}")


if __name__ == "__main__":
    main()
