"""The proxy's own CPU per request, without sockets, per way of balancing: `python bench/hotpath.py`.

One client connection and one pooled upstream connection are wired to in-memory transports; the loop feeds a
wrk-like request to the client side and an nginx-like response to the upstream side, so what is timed is
exactly the Python (and httptools) work pyngress adds per request: parsing both heads, routing, balancing,
rewriting headers, pool hand-over. No syscalls, no event-loop turns. The result is the floor that the `user`
column of `bench/run.py` sits on (that one also counts uvloop's own work per read and write).

Each balancing variant (round robin, p2c, ewma, ring hash, cookie affinity) runs the same loop over three
endpoints; its extra µs against round robin, divided by the whole per-request CPU that `bench/run.py` measured
for round robin (user + kernel), is its cost in throughput. Best of several repeats, since this machine's
other core is busy with whatever else runs.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from types import MappingProxyType
from typing import Any

from pyngress.balancing import SmoothWeightedRoundRobin
from pyngress.balancing.affinity import CookieAffinity
from pyngress.model import (
    NO_AFFINITY,
    AffinitySpec,
    Backend,
    BalanceSpec,
    Endpoint,
    PathType,
    ProxySettings,
    Route,
    Snapshot,
)
from pyngress.observability.accesslog import AccessLog
from pyngress.runtime.downstream import Downstream
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.upstream import Upstream

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 05:29:44 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 19\r\nConnection: keep-alive\r\n\r\n"
            b"hello from backend\n")
REQUESTS = 100_000
REPEATS = 5
PER_REQUEST_CPU_US = 16.1  # user + sys per request of pyngress (compiled), round robin, bench/run.py, 2026-11-29


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


ENDPOINTS = tuple(Endpoint("127.0.0.1", 9000 + i) for i in range(3))
COOKIE = AffinitySpec(kind="cookie", salt="bench")

# name -> how the route balances, and the request a returning client sends
VARIANTS: dict[str, tuple[BalanceSpec, AffinitySpec, bytes]] = {
    "round_robin": (BalanceSpec(), NO_AFFINITY, b""),
    "p2c": (BalanceSpec(algorithm="p2c"), NO_AFFINITY, b""),
    "ewma": (BalanceSpec(algorithm="ewma"), NO_AFFINITY, b""),
    "ring hash $remote_addr": (BalanceSpec(hash_by="$remote_addr"), NO_AFFINITY, b""),
    "cookie affinity": (BalanceSpec(), COOKIE, b""),
}
# Every variant sends the same request, a returning browser's with its affinity cookie, so that the
# difference between rows is the balancing alone (one more header costs about 0.2 µs by itself).


def snapshot(spec: BalanceSpec, affinity: AffinitySpec) -> Snapshot:
    backend = Backend("default/web:80", "default", "web", "80", ENDPOINTS)
    unlimited = ProxySettings(keep_alive_requests=10**9, upstream_keepalive_requests=10**9)
    route = Route("", "/", PathType.PREFIX, backend, "default/web", spec, affinity)
    return Snapshot(1, routes=(route,), backends=MappingProxyType({backend.key: backend}), settings=unlimited)


def cookie_request() -> bytes:
    token = CookieAffinity(SmoothWeightedRoundRobin(ENDPOINTS, random.Random(0)), ENDPOINTS, salt=b"bench").token(
        ENDPOINTS[1], None)
    assert token is not None
    return REQUEST[:-2] + b"Cookie: INGRESSCOOKIE=" + token + b"\r\n\r\n"


async def measure(spec: BalanceSpec, affinity: AffinitySpec, request: bytes, access_log: bool = False) -> float:
    snap = snapshot(spec, affinity)
    request = request or cookie_request()
    server = ProxyServer(snap)
    log = None
    if access_log:  # the JSON access log, written by its thread to /dev/null
        log = AccessLog(fd=os.open(os.devnull, os.O_WRONLY))
        server.recorder.set_sink(log)
    client, client_transport = Downstream(server), MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    server.pool.settings = snap.settings
    upstreams = {}
    for endpoint in ENDPOINTS:
        upstream = upstreams[endpoint.key] = Upstream(server.pool, endpoint)
        upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
        server.pool.release(upstream)
    best = float("inf")
    clock = time.perf_counter
    for _ in range(REPEATS):
        start = clock()
        for _ in range(REQUESTS):
            client.data_received(request)
            upstreams[client.queue[0].endpoint.key].data_received(RESPONSE)  # type: ignore[union-attr]
        best = min(best, clock() - start)
    assert client_transport.last.endswith(b"hello from backend\n"), "the response did not reach the client"
    if log is not None:
        log.close()
        os.close(log.fd)
    return best / REQUESTS * 1e6


def main() -> None:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    results = {name: run(measure(*variant)) for name, variant in VARIANTS.items()}
    results["round_robin + access log"] = run(measure(*VARIANTS["round_robin"], access_log=True))
    base = results["round_robin"]
    print(f"pyngress hot path, µs of Python per request (best of {REPEATS} x {REQUESTS:,}, 3 endpoints):")
    for name, us in results.items():
        # throughput cost against round robin, with the whole per-request CPU (user + kernel) that
        # bench/run.py measured for round robin (PER_REQUEST_CPU_US): each extra µs is that share of it
        extra = us - base
        share = extra / PER_REQUEST_CPU_US * 100
        print(f"  {name:24} {us:6.2f} µs  {extra:+5.2f} µs  ~{share:+4.1f} % throughput")


if __name__ == "__main__":
    main()
