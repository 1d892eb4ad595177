"""The proxy's own CPU per request, without sockets: `python bench/hotpath.py`.

One client connection and one pooled upstream connection are wired to in-memory transports; the loop feeds a
wrk-like request to the client side and an nginx-like response to the upstream side, so what is timed is
exactly the Python (and httptools) work pyngress adds per request: parsing both heads, routing, balancing,
rewriting headers, pool hand-over. No syscalls, no event-loop turns. The result is the floor that the `user`
column of `bench/run.py` sits on (that one also counts uvloop's own work per read and write).

Best of several repeats, since this machine's other core is busy with whatever else runs.
"""

from __future__ import annotations

import asyncio
import time
from types import MappingProxyType
from typing import Any

from pyngress.model import Backend, Endpoint, PathType, ProxySettings, Route, Snapshot
from pyngress.runtime.downstream import Downstream
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.upstream import Upstream

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 05:29:44 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 19\r\nConnection: keep-alive\r\n\r\n"
            b"hello from backend\n")
REQUESTS = 100_000
REPEATS = 7


class MemoryTransport:
    """Just enough of asyncio.Transport for the protocols; keeps only the last write."""

    def __init__(self) -> None:
        self.last: Any = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def writelines(self, data: Any) -> None:
        self.last = data

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 8080)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


def snapshot() -> Snapshot:
    backend = Backend("default/web:80", "default", "web", "80", (Endpoint("127.0.0.1", 9000),))
    unlimited = ProxySettings(keep_alive_requests=10**9, upstream_keepalive_requests=10**9)
    return Snapshot(1, routes=(Route("", "/", PathType.PREFIX, backend, "default/web"),),
                    backends=MappingProxyType({backend.key: backend}), settings=unlimited)


async def measure() -> tuple[float, float]:
    snap = snapshot()
    server = ProxyServer(snap)
    client, client_transport = Downstream(server), MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    upstream = Upstream(server.pool, snap.routes[0].backend.endpoints[0])
    upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
    server.pool.settings = snap.settings
    server.pool.release(upstream)
    best_total = best_request = float("inf")
    clock = time.perf_counter
    for _ in range(REPEATS):
        request_side = 0.0
        start = clock()
        for _ in range(REQUESTS):
            t0 = clock()
            client.data_received(REQUEST)
            request_side += clock() - t0
            upstream.data_received(RESPONSE)
        best_total = min(best_total, clock() - start)
        best_request = min(best_request, request_side)
    assert client_transport.last.endswith(b"hello from backend\n"), "the response did not reach the client"
    return best_total / REQUESTS * 1e6, best_request / REQUESTS * 1e6


def main() -> None:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    total, request_side = run(measure())
    print(f"pyngress hot path: {total:.2f} µs per request (request side ~{request_side:.2f} µs incl. timer "
          f"overhead), best of {REPEATS} x {REQUESTS:,}")


if __name__ == "__main__":
    main()
