"""What flow control costs per request: a rate-limited route (and one with the Redis global limit) against a
plain one, in one run. `python bench/flow.py [--wrk] [--rounds 3] [--duration 5]`.

Part 1, always: the in-memory hot path of `bench/hotpath.py` (no sockets: parsing, routing, the checks,
forwarding) for a plain route, a rate-limited one (limit-rps high enough never to refuse, so every request
takes a token), the same with the buckets --workers N share (in a shared memory region), one with allow/deny
lists, one with rate + connections + allowlist, and one with the global
limit against a real redis-server (started here on a free port; batches of 100, so one request in 100 awaits
a Redis round trip, and that wait is counted as if it were CPU: a pessimistic number). Best of a few repeats.

Part 2, with --wrk: one `pyngress run` process serving four hosts (plain; rps: limit-rps; limited: limit-rps and
limit-connections; global) behind the same
nginx backend as bench/run.py, wrk against each host in interleaved rounds (the order rotates per round),
medians of req/s and the ratios to the plain host. Targets (issue 5): a rate-limited route (rps; limited too)
>= 0.95, global >= 0.85.
Needs wrk, nginx and redis-server; everything stays on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mmap
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import hotpath
import run as nginx_bench

from pyngress.model import Backend, PathType, ProxySettings, Route, Snapshot
from pyngress.model.flow import FlowSpec, GlobalLimitSpec, RateSpec
from pyngress.runtime.downstream import Downstream
from pyngress.runtime.flow import shared_size
from pyngress.runtime.server import ProxyServer
from pyngress.runtime.upstream import Upstream

HUGE = 10**9  # a limit no bench reaches: every request is checked and admitted
RATE = RateSpec(float(HUGE), HUGE, "huge r/s")
VARIANTS: dict[str, FlowSpec | None] = {
    "plain": None,
    "limit-rps": FlowSpec("default/web", rates=(RATE,)),
    "limit-rps, shared by workers": FlowSpec("default/web", rates=(RATE,)),
    "limit-rps + limit-connections": FlowSpec("default/web", rates=(RATE,), connections=HUGE),
    "rps + connections, shared by workers": FlowSpec("default/web", rates=(RATE,), connections=HUGE),
    "allow + deny lists": FlowSpec("default/web", allow=("127.0.0.0/8", "::1"), deny=("10.0.0.0/8",)),
    "rps + connections + allowlist": FlowSpec("default/web", rates=(RATE,), connections=HUGE,
                                              allow=("127.0.0.0/8",)),
    "global limit (Redis, batch 100)": FlowSpec("default/web", global_limit=GlobalLimitSpec(HUGE, 3600.0,
                                                                                              batch=100)),
    "global limit (Redis, default batch)": FlowSpec("default/web", global_limit=GlobalLimitSpec(HUGE, 3600.0)),
}
REQUESTS = 20_000
YIELD_EVERY = 16  # requests between two turns of the event loop (in every variant alike)
REPEATS = 7


def snapshot(flow: FlowSpec | None) -> Snapshot:
    backend = Backend("default/web:80", "default", "web", "80", hotpath.ENDPOINTS)
    settings = ProxySettings(keep_alive_requests=HUGE, upstream_keepalive_requests=HUGE)
    route = replace(Route("", "/", PathType.PREFIX, backend, "default/web"), flow=flow)
    return Snapshot(1, routes=(route,), backends=MappingProxyType({backend.key: backend}), settings=settings)


class Bench:
    """One proxy with in-memory transports for one variant; `run` times REQUESTS requests through it."""

    def __init__(self, flow: FlowSpec | None, redis_url: str, shared: bool = False) -> None:
        self.server = server = ProxyServer(snapshot(flow))
        if flow is not None and flow.global_limit is not None:
            server.flow.configure(redis_url=redis_url)
        elif flow is not None and shared:
            server.flow.configure(workers=2, shared=mmap.mmap(-1, shared_size(2)))
        self.client, self.transport = Downstream(server), hotpath.MemoryTransport()
        self.client.connection_made(self.transport)  # type: ignore[arg-type]
        server.pool.settings = server.dataplane.serving.settings
        self.upstreams = {}
        for endpoint in hotpath.ENDPOINTS:
            upstream = self.upstreams[endpoint.key] = Upstream(server.pool, endpoint)
            upstream.connection_made(hotpath.MemoryTransport())  # type: ignore[arg-type]
            server.pool.release(upstream)

    async def run(self) -> tuple[float, float]:
        """(wall µs, CPU µs) per request. They differ by the time spent waiting for Redis."""
        client, upstreams, gate = self.client, self.upstreams, self.server.flow
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(REQUESTS):
            if not i % YIELD_EVERY:  # the event loop gets a turn, as between reads (a prefetch can complete)
                await asyncio.sleep(0)
            client.data_received(hotpath.REQUEST)
            if client.queue[0].endpoint is None:  # waiting for a Redis reservation
                await asyncio.gather(*gate._tasks)
            upstreams[client.queue[0].endpoint.key].data_received(hotpath.RESPONSE)  # type: ignore[union-attr]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert self.transport.last.endswith(b"hello from backend\n"), "the response did not reach the client"
        return wall / REQUESTS * 1e6, cpu / REQUESTS * 1e6


async def measure_all(redis_url: str) -> dict[str, tuple[float, float]]:
    """Variants interleaved, REPEATS rounds, best wall and best CPU of each (noise only ever adds time)."""
    benches = {name: Bench(flow, redis_url, shared="shared" in name) for name, flow in VARIANTS.items()}
    best = {name: (float("inf"), float("inf")) for name in VARIANTS}
    for _ in range(REPEATS):
        for name, bench in benches.items():
            wall, cpu = await bench.run()
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    for bench in benches.values():
        await bench.server.flow.close()
    return best


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (apt-get install -y redis-server)")
    port = nginx_bench.free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(8).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(5)


def hot_path(redis_url: str) -> None:
    import uvloop

    results = uvloop.run(measure_all(redis_url))
    base = results["plain"][1]
    print(f"hot path, µs per request (best of {REPEATS} interleaved x {REQUESTS:,}; in memory, no sockets):")
    print(f"  {'':32} {'wall':>9} {'CPU':>9} {'extra CPU':>10}")
    for name, (wall, cpu) in results.items():
        extra = cpu - base
        share = extra / hotpath.PER_REQUEST_CPU_US * 100
        print(f"  {name:32} {wall:6.2f} µs {cpu:6.2f} µs {extra:+6.2f} µs  ~{share:+4.1f} % throughput")
    print(f"  (throughput share: extra µs / {hotpath.PER_REQUEST_CPU_US} µs, the whole per-request CPU of a plain"
          " route in bench/run.py)")


# -- part 2: wrk through real sockets ----------------------------------------------------------------------

HOSTS = {"plain": "", "rps": """
    nginx.ingress.kubernetes.io/limit-rps: "1000000000"
""", "limited": """
    nginx.ingress.kubernetes.io/limit-rps: "1000000000"
    nginx.ingress.kubernetes.io/limit-connections: "1000000"
""", "global": """
    nginx.ingress.kubernetes.io/global-rate-limit: "1000000000"
    nginx.ingress.kubernetes.io/global-rate-limit-window: "1h"
"""}


def manifests(backend_port: int) -> str:
    docs = [nginx_bench.manifests(backend_port)[f] for f in ("service.yaml", "endpointslice.yaml",
                                                              "configmap.yaml")]
    for host, notes in HOSTS.items():
        annotations = f"  annotations:{notes}" if notes else ""
        docs.append(textwrap.dedent(f"""\
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata:
              name: {host}
              namespace: default
            """) + annotations.replace("\n    ", "\n    ") + textwrap.dedent(f"""
            spec:
              ingressClassName: pyngress
              rules:
                - host: {host}.bench
                  http:
                    paths:
                      - path: /
                        pathType: Prefix
                        backend: {{service: {{name: bench, port: {{name: http}}}}}}
            """))
    return "\n---\n".join(docs)


def wrk(args: argparse.Namespace, port: int, host: str, duration: int, cpus: str | None) -> float:
    argv = nginx_bench.pinned(["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency",
                               "-H", f"Host: {host}.bench", f"http://127.0.0.1:{port}/"], cpus)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    result = nginx_bench.parse_wrk(done.stdout)
    if not result.clean:
        raise SystemExit(f"{host}: {result.non_2xx} non-2xx responses, {result.socket_errors} socket errors")
    return result.rps


def through_sockets(args: argparse.Namespace, redis_url: str) -> None:
    nginx = nginx_bench.ensure_tools()
    pin = nginx_bench.choose_pinning(args.pin, 1)
    started = []
    with tempfile.TemporaryDirectory(prefix="pyngress-flow-bench-") as tmp:
        workdir = Path(tmp)
        try:
            bport, pport = nginx_bench.free_port(), nginx_bench.free_port()
            backend = nginx_bench.start_nginx("backend", nginx, nginx_bench.backend_conf(workdir / "backend",
                                                                                           bport), bport,
                                              workdir, pin.load)
            started.append(backend)
            (workdir / "manifests").mkdir()
            (workdir / "manifests" / "all.yaml").write_text(manifests(bport))
            argv = [sys.executable, "-m", "pyngress", "run", "-f", str(workdir / "manifests"), "--address",
                    "127.0.0.1", "--http-port", str(pport), "--https-port", "0", "--redis-url", redis_url]
            ours = nginx_bench.start_server("pyngress", nginx_bench.pinned(argv, pin.proxy), pport, workdir)
            started.append(ours)
            nginx_bench.wait_ready(backend)
            _wait_host(pport, "plain")
            for host in HOSTS:
                wrk(args, pport, host, 1, pin.load)  # warm-up
            rps: dict[str, list[float]] = {host: [] for host in HOSTS}
            order = list(HOSTS)
            for i in range(args.rounds):
                for host in order[i % len(order):] + order[:i % len(order)]:
                    rps[host].append(wrk(args, pport, host, args.duration, pin.load))
                print(f"round {i + 1}: " + ", ".join(f"{h} {rps[h][-1]:,.0f} req/s" for h in HOSTS), flush=True)
        finally:
            for server in reversed(started):
                nginx_bench.stop_server(server)
    medians = {host: statistics.median(values) for host, values in rps.items()}
    print(f"wrk -c{args.connections}, {args.rounds} x {args.duration} s, medians (pinning {pin.describe()}):")
    for host, value in medians.items():
        print(f"  {host:8} {value:10,.0f} req/s  ratio to plain {value / medians['plain']:.3f}")


def _wait_host(port: int, host: str) -> None:
    import http.client

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        with contextlib.suppress(OSError):
            conn.request("GET", "/", headers={"Host": f"{host}.bench"})
            if conn.getresponse().status == 200:
                conn.close()
                return
        conn.close()
        time.sleep(0.1)
    raise SystemExit("pyngress did not answer")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--wrk", action="store_true", help="also measure through real sockets with wrk")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args()
    with redis_server() as redis_url:
        hot_path(redis_url)
        if args.wrk:
            through_sockets(args, redis_url)


if __name__ == "__main__":
    main()
