"""What following WebSocket frame boundaries costs a tunnel (runtime.ws_frames, issue 7).

    PYTHONPATH=src python bench/ws_frames.py [--rounds 3]

Part 1, the tracker alone, per relayed chunk, for three shapes of traffic: 64 KiB chunks of one large binary
message (the tracker only counts), 100-byte messages arriving one per chunk (one header read per chunk), and
64 KiB chunks packed with 100-byte frames (655 headers per chunk, the worst case). Compared with a send+recv
of the chunk through a socketpair (the cheapest real relay step), measured the same way.

Part 2, through a real tunnel: an in-process ProxyServer on 127.0.0.1 relaying to an echo pod (after its 101
it sends back every byte); a client does 100-byte frame round trips, then streams 64 MiB in 64 KiB writes
inside one frame and reads the echo. Each round runs with the tracker and with `FrameTracker.feed` replaced by
a no-op (what the tunnel cost before), interleaved; medians. (With a mypyc build, where ws_frames is compiled,
the class cannot be patched: only the tracked numbers are shown.)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import struct
import time
import timeit
from types import MappingProxyType

import uvloop

from pyngress.model import Backend, Endpoint, PathType, Route, Snapshot
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.ws_frames import FrameTracker

ROUND_TRIPS = 5000
BULK = 64 * 1024 * 1024
BURST_FRAMES = 20_000  # 2 MB of 100-byte frames written at once
UPGRADE = (b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def frame(length: int) -> bytes:
    head = b"\x82" + (bytes((0x80 | length,)) if length < 126 else b"\xfe" + struct.pack("!H", length))
    return head + b"\x01\x02\x03\x04" + bytes(length)


def per_call(fn: object, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def tracker_alone() -> None:
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


async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def through_tunnel(port: int) -> tuple[float, float, float]:
    """(µs per 100-byte round trip, MB/s of a 64 MiB frame echoed, MB/s of a burst of 100-byte frames)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(UPGRADE)
    await reader.readuntil(b"\r\n\r\n")
    small = frame(94)
    started = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        writer.write(small)
        await reader.readexactly(len(small))
    round_trip = (time.perf_counter() - started) / ROUND_TRIPS * 1e6
    head = b"\x82\xff" + struct.pack("!Q", BULK) + b"\x01\x02\x03\x04"
    chunk = bytes(65536)

    async def send() -> None:
        writer.write(head)
        for _ in range(BULK // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    started = time.perf_counter()
    sender = asyncio.create_task(send())
    await reader.readexactly(len(head) + BULK)
    await sender
    bulk = BULK / (time.perf_counter() - started) / 1e6
    burst = small * BURST_FRAMES  # many small messages at once: chunks packed with frame headers
    started = time.perf_counter()
    writer.write(burst)
    await reader.readexactly(len(burst))
    packed = len(burst) / (time.perf_counter() - started) / 1e6
    writer.close()
    await writer.wait_closed()
    return round_trip, bulk, packed


async def tunnel_rounds(rounds: int) -> None:
    server = await asyncio.start_server(pod, "127.0.0.1", 0)
    endpoint = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    backend = Backend("default/ws:80", "default", "ws", "80", (endpoint,))
    route = Route("", "/", PathType.PREFIX, backend, "default/ws")
    proxy = ProxyServer(Snapshot(1, routes=(route,), backends=MappingProxyType({backend.key: backend})))
    port = await proxy.listen("127.0.0.1", 0)
    feed = FrameTracker.feed
    results: dict[str, list[tuple[float, float, float]]] = {"tracked": [], "untracked": []}
    variants = ("tracked", "untracked")
    try:
        FrameTracker.feed = feed  # type: ignore[method-assign]
    except (TypeError, AttributeError):  # compiled by mypyc (setup.py HOT_PATH): a native class, not patchable
        variants = ("tracked",)
    try:
        for _ in range(rounds):
            for variant in variants:
                FrameTracker.feed = feed if variant == "tracked" else (lambda self, data: None)  # type: ignore
                results[variant].append(await through_tunnel(port))
    finally:
        if len(variants) > 1:
            FrameTracker.feed = feed  # type: ignore[method-assign]
        await proxy.drain(1)
        server.close()
        await server.wait_closed()
    print(f"\n{'through a tunnel':20} {'µs per 100-byte round trip':>28} {'MB/s, 64 MiB frame':>20} "
          f"{'MB/s, 100-byte burst':>22}")
    medians = {v: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for v, rs in results.items() if rs}
    for variant, (rt, bulk, packed) in medians.items():
        print(f"{variant:20} {rt:28.1f} {bulk:20.0f} {packed:22.1f}")
    if "untracked" not in medians or not medians["untracked"]:
        return
    t, u = medians["tracked"], medians["untracked"]
    print(f"{'throughput ratio':20} {u[0] / t[0]:28.3f} {t[1] / u[1]:20.3f} {t[2] / u[2]:22.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tracker_alone()
    uvloop.run(tunnel_rounds(args.rounds))


if __name__ == "__main__":
    main()
