"""Is zero-copy (`os.splice`, Linux) worth it for pyngress's TCP relay? Measures the two ways side by side.

The issue asks for splice only if it measures faster than the plain uvloop Protocol path. This script runs
two minimal one-endpoint relays on uvloop, as separate processes pinned like bench/l4.py pins the proxies:

* `protocol`: what runtime/l4/tcp.py does: `data_received` on one side is `transport.write` on the other,
  with pause/resume_reading for backpressure (uvloop reads up to 256 KiB per call into a buffer it owns);
* `splice`: raw non-blocking sockets watched with `loop.add_reader`/`add_writer`; each direction moves bytes
  socket -> pipe -> socket with `os.splice` (SPLICE_F_MOVE | SPLICE_F_NONBLOCK, 1 MiB pipes), never copying
  them into Python; when the destination is full the source stops being watched until the pipe drains.

Both relay to the same nginx backend, driven by wrk: keep-alive request/response (small messages) and one bulk
stream (a 64 MiB file, MB/s). Interleaved rounds, medians.

Usage: python bench/l4_splice.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import run as http_bench
from l4 import backend_conf, wait_http, wrk
from run import BenchError, Server, choose_pinning, free_port, pinned, start_nginx, start_server, stop_server

MODES = ("protocol", "splice")
PIPE_SIZE = 1 << 20
CHUNK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


# -- relay 1: uvloop Protocols ---------------------------------------------------------------------------


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending += data

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def protocol_relay(listen: int, target: int) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def accepted() -> _Side:
        client = _Side()

        async def connect() -> None:
            _, pod = await loop.create_connection(_Side, "127.0.0.1", target)
            pod.peer, client.peer = client, pod
            if client.pending:
                assert pod.transport is not None
                pod.transport.write(client.pending)

        tasks.add(task := loop.create_task(connect()))
        task.add_done_callback(tasks.discard)
        return client

    server = await loop.create_server(accepted, "127.0.0.1", listen, backlog=4096)
    await server.serve_forever()


# -- relay 2: os.splice through a pipe ---------------------------------------------------------------------


class _Pipe:
    """One direction: src socket -> pipe -> dst socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket,
                 on_close: object) -> None:
        self.loop, self.src, self.dst, self.on_close = loop, src, dst, on_close
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.w, F_SETPIPE_SZ, PIPE_SIZE)
        self.buffered = 0
        loop.add_reader(src.fileno(), self.readable)

    def readable(self) -> None:
        try:
            n = os.splice(self.src.fileno(), self.w, CHUNK, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self.close()
            return
        self.buffered += n
        self.flush()

    def flush(self) -> None:
        while self.buffered:
            try:
                n = os.splice(self.r, self.dst.fileno(), self.buffered,
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:  # destination full: stop reading the source until it drains
                self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self.writable)
                return
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    self.close()
                    return
                raise
            self.buffered -= n

    def writable(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        self.flush()
        if not self.buffered:
            self.loop.add_reader(self.src.fileno(), self.readable)

    def close(self) -> None:
        self.loop.remove_reader(self.src.fileno())
        self.loop.remove_writer(self.dst.fileno())
        os.close(self.r)
        os.close(self.w)
        self.on_close()  # type: ignore[operator]


async def splice_relay(listen: int, target: int) -> None:
    loop = asyncio.get_running_loop()
    server = socket.create_server(("127.0.0.1", listen), backlog=4096)
    server.setblocking(False)
    while True:
        client, _ = await loop.sock_accept(server)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pod = socket.socket()
        pod.setblocking(False)
        pod.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(pod, ("127.0.0.1", target))
        closed: list[int] = []

        def done(client: socket.socket = client, pod: socket.socket = pod, closed: list[int] = closed) -> None:
            closed.append(1)
            if len(closed) == 1:  # the first direction to end closes the connection (enough for HTTP)
                for s in (client, pod):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
            if len(closed) == 2:
                client.close()
                pod.close()

        _Pipe(loop, client, pod, done)
        _Pipe(loop, pod, client, done)


# -- the measurement ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def relays(cpus_proxy: str | None, cpus_load: str | None) -> Iterator[dict[str, Server]]:
    nginx = http_bench.ensure_tools()
    started: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="pyngress-splice-") as tmp:
        workdir = Path(tmp)
        try:
            bport = free_port()
            (workdir / "www").mkdir()
            (workdir / "www" / "bulk").write_bytes(os.urandom(1 << 20) * 64)
            started.append(start_nginx("backend", nginx, backend_conf(workdir / "backend", bport), bport, workdir,
                                       cpus_load))
            for mode in MODES:
                port = free_port()
                argv = [sys.executable, __file__, "relay", mode, str(port), str(bport)]
                started.append(start_server(mode, pinned(argv, cpus_proxy), port, workdir))
            for server in started:
                wait_http(server)
            yield {s.name: s for s in started[1:]}
        finally:
            for server in reversed(started):
                stop_server(server)


def main() -> int:
    if sys.argv[1:2] == ["relay"]:
        import uvloop

        mode, listen, target = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        uvloop.run((protocol_relay if mode == "protocol" else splice_relay)(listen, target))
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=50)
    args = p.parse_args()
    pin = choose_pinning(None, 1)
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        with relays(pin.proxy, pin.load) as servers:
            for i in range(args.rounds):
                for load in ("keep-alive", "bulk"):
                    for mode in MODES if i % 2 == 0 else reversed(MODES):
                        r = wrk(load, servers[mode].port, args, pin.load, servers[mode])
                        rates.setdefault((load, mode), []).append(r.rate)
                        print(f"round {i + 1} {load:10} {mode:8} {r.rate:10,.0f} "
                              f"{'MB/s' if load == 'bulk' else 'req/s'}  cpu {r.cpu_us:.1f} us"
                              + (f"  ERRORS {r.errors}" if r.errors else ""), flush=True)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    for load in ("keep-alive", "bulk"):
        proto, spl = (statistics.median(rates[(load, m)]) for m in MODES)
        print(f"{load:10} protocol {proto:10,.0f}  splice {spl:10,.0f}  splice/protocol {spl / proto:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
