"""TCP relaying: pyngress's layer 4 services against HAProxy `mode tcp`, in one run.

Method
------
* One backend for both proxies: an nginx answering HTTP (`/`: a 20-byte body; `/bulk`: a 64 MiB file). HTTP
  is only the payload here: both proxies relay bytes at layer 4 and never parse it. Using HTTP lets `wrk`
  drive the load and check every answer.
* Both proxies: one worker/thread each, pinned to CPU 0 (wrk and the backend on CPU 1) when `taskset` is
  there. HAProxy: `mode tcp`, `nbthread 1`, default buffers (it may splice on its own: that is its fast path,
  so it is allowed). pyngress: a tcp-services ConfigMap entry, `--workers 1`.
* Three loads, each against both proxies back to back, alternating which goes first, for `--rounds` rounds:
  - **keep-alive**: `wrk -c50` on persistent connections: request/response rate through an established
    TCP relay (the issue's target: pyngress at least 1.0x HAProxy);
  - **connections**: the same with `Connection: close`, so every request is a new client connection and a new
    pod connection: the connection rate;
  - **bulk**: `wrk -c1` fetching `/bulk` in a loop: MB/s of one stream.
* CPU per request: user and system clock ticks of each proxy's process group over the run (/proc), divided by
  the requests (per MB for bulk).

Usage: python bench/l4.py [--rounds 3] [--duration 5] [--connections 50] [--loads keep-alive bulk ...]
                          [--pin | --no-pin]
                          [--pyngress-cmd "python -m pyngress"]
Helpers (process handling, wrk parsing, pinning) come from bench/run.py. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import run as http_bench  # bench/run.py: this script's directory is on sys.path
from run import BenchError, Server, choose_pinning, free_port, pinned, start_nginx, start_server, stop_server

HAPROXY = "haproxy"
PYNGRESS = "pyngress"
LOADS = ("keep-alive", "connections", "bulk")
BULK_BYTES = 64 * 1024 * 1024
TARGET = 1.0  # keep-alive: pyngress req/s over HAProxy's


def backend_conf(prefix: Path, port: int) -> str:
    return http_bench.NGINX_COMMON.format(prefix=prefix) + "master_process off;\nhttp {\n" + \
        http_bench.HTTP_COMMON.format(prefix=prefix) + textwrap.indent(textwrap.dedent(f"""\
        server {{
            listen 127.0.0.1:{port} reuseport;
            location = /bulk {{ root {prefix.parent}/www; default_type application/octet-stream; }}
            location / {{ default_type text/plain; return 200 "hello from backend\\n"; }}
        }}
        """), "    ") + "}\n"


def haproxy_conf(port: int, backend_port: int) -> str:
    return textwrap.dedent(f"""\
        global
            nbthread 1
            maxconn 8000
        defaults
            mode tcp
            timeout connect 5s
            timeout client 600s
            timeout server 600s
        frontend l4
            bind 127.0.0.1:{port}
            default_backend pods
        backend pods
            server pod1 127.0.0.1:{backend_port}
        """)


def pyngress_manifests(listen: int, backend_port: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: pod, namespace: bench}}
        spec: {{ports: [{{name: http, port: 80}}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {{name: pod-1, namespace: bench, labels: {{kubernetes.io/service-name: pod}}}}
        addressType: IPv4
        ports: [{{name: http, port: {backend_port}}}]
        endpoints: [{{addresses: [127.0.0.1]}}]
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: tcp-services, namespace: bench}}
        data: {{"{listen}": "bench/pod:80"}}
        """)


def wait_http(server: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited early:\n{server.log_tail()}")
        if http_bench.http_status(server.port) == 200:
            return
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not relay a request within {timeout:.0f} s:\n{server.log_tail()}")


@contextlib.contextmanager
def running(args: argparse.Namespace, cpus_proxy: str | None,
            cpus_load: str | None) -> Iterator[dict[str, Server]]:
    nginx = http_bench.ensure_tools()
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        raise BenchError("haproxy not found: apt-get install haproxy")
    started: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="pyngress-l4-bench-") as tmp:
        workdir = Path(tmp)
        try:
            bport, hport, pport, http_port = free_port(), free_port(), free_port(), free_port()
            (workdir / "www").mkdir()
            (workdir / "www" / "bulk").write_bytes(os.urandom(1 << 20) * (BULK_BYTES >> 20))
            backend = start_nginx("backend", nginx, backend_conf(workdir / "backend", bport), bport, workdir,
                                  cpus_load)
            started.append(backend)
            (workdir / "haproxy.cfg").write_text(haproxy_conf(hport, bport))
            started.append(start_server(HAPROXY, pinned([haproxy, "-db", "-f", str(workdir / "haproxy.cfg")],
                                                        cpus_proxy), hport, workdir))
            (workdir / "manifests.yaml").write_text(pyngress_manifests(pport, bport))
            argv = [*args.pyngress_cmd, "run", "-f", str(workdir / "manifests.yaml"), "--address", "127.0.0.1",
                    "--http-port", str(http_port), "--https-port", "0", "--workers", "1", "--log-level", "warning",
                    "--tcp-services-configmap", "bench/tcp-services"]
            started.append(start_server(PYNGRESS, pinned(argv, cpus_proxy), pport, workdir))
            for server in started:
                wait_http(server)
            print(f"backend :{bport}, haproxy :{hport}, pyngress :{pport}", flush=True)
            yield {s.name: s for s in started[1:]}
        finally:
            for server in reversed(started):
                stop_server(server)


@dataclass(frozen=True)
class Result:
    rate: float  # requests/s (keep-alive, connections) or MB/s (bulk)
    p99_ms: float
    errors: int
    cpu_us: float  # proxy CPU (user + sys) per request, or per MB for bulk
    user_us: float  # the user-space part of it


def wrk(load: str, port: int, args: argparse.Namespace, cpus: str | None, server: Server) -> Result:
    connections = 1 if load == "bulk" else args.connections
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{args.duration}s", "--latency"]
    if load == "connections":
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/" + ("bulk" if load == "bulk" else ""))
    before = http_bench.group_cpu_ticks(server.proc.pid)
    done = subprocess.run(pinned(argv, cpus), capture_output=True, text=True, timeout=args.duration + 60,
                          check=False)
    after = http_bench.group_cpu_ticks(server.proc.pid)
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}")
    parsed = http_bench.parse_wrk(done.stdout)
    tick = os.sysconf("SC_CLK_TCK")
    cpu_s, user_s = (after[0] - before[0] + after[1] - before[1]) / tick, (after[0] - before[0]) / tick
    errors = parsed.socket_errors + parsed.non_2xx
    if load == "bulk":
        megabytes = parsed.requests * BULK_BYTES / 1e6 or _transfer_mb(done.stdout)
        per = max(megabytes, 1e-9)
        return Result(megabytes / parsed.elapsed_s, parsed.p99_ms, errors, 1e6 * cpu_s / per, 1e6 * user_s / per)
    per = max(parsed.requests, 1)
    return Result(parsed.rps, parsed.p99_ms, errors, 1e6 * cpu_s / per, 1e6 * user_s / per)


def _transfer_mb(output: str) -> float:
    """Bytes read when no whole /bulk response finished in the run (a very slow proxy)."""
    match = re.search(r"requests in \S+, ([\d.]+)(KB|MB|GB)", output)
    if not match:
        return 0.0
    return float(match.group(1)) * {"KB": 1e-3, "MB": 1.0, "GB": 1e3}[match.group(2)] * 1.048576


def measure(args: argparse.Namespace, servers: dict[str, Server], cpus_load: str | None
            ) -> dict[str, dict[str, list[Result]]]:
    results: dict[str, dict[str, list[Result]]] = {load: {HAPROXY: [], PYNGRESS: []} for load in LOADS}
    for i in range(args.rounds):
        for load in args.loads:
            order = [HAPROXY, PYNGRESS] if i % 2 == 0 else [PYNGRESS, HAPROXY]
            for name in order:
                r = wrk(load, servers[name].port, args, cpus_load, servers[name])
                results[load][name].append(r)
                unit = "MB/s" if load == "bulk" else "req/s"
                print(f"round {i + 1} {load:11} {name:8} {r.rate:10,.0f} {unit:5}  p99 {r.p99_ms:6.2f} ms  "
                      f"cpu {r.cpu_us:6.1f} (user {r.user_us:5.1f}) us/{'MB' if load == 'bulk' else 'req'}"
                      + (f"  ERRORS {r.errors}" if r.errors else ""), flush=True)
    return results


def report(results: dict[str, dict[str, list[Result]]]) -> str:
    """Medians per proxy, their ratio, and the median of the per-round ratios: each round runs both proxies
    back to back, so a round's ratio cancels the machine's drift that the medians over rounds keep."""
    lines = ["| load | HAProxy | pyngress | ratio of medians | median of round ratios "
             "| CPU µs HAProxy (user) | CPU µs pyngress (user) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for load in [load for load in LOADS if results[load][HAPROXY]]:
        ours, theirs = results[load][PYNGRESS], results[load][HAPROXY]
        h, p = statistics.median(r.rate for r in theirs), statistics.median(r.rate for r in ours)
        paired = statistics.median(a.rate / b.rate for a, b in zip(ours, theirs, strict=True))
        cpu = [statistics.median(getattr(r, f) for r in rs)
               for rs in (theirs, ours) for f in ("cpu_us", "user_us")]
        unit = "MB/s" if load == "bulk" else "req/s"
        target = f" (target ≥ {TARGET}: {'met' if paired >= TARGET else 'missed'})" if load == "keep-alive" else ""
        lines.append(f"| {load} ({unit}) | {h:,.0f} | {p:,.0f} | {p / h:.2f} | **{paired:.2f}**{target} "
                     f"| {cpu[0]:.1f} ({cpu[1]:.1f}) | {cpu[2]:.1f} ({cpu[3]:.1f}) |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pyngress TCP relaying vs HAProxy mode tcp")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--pyngress-cmd", default="pyngress", type=shlex.split)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, http_bench.raise_on_sigterm)
    pin = choose_pinning(args.pin, 1)
    try:
        with running(args, pin.proxy, pin.load) as servers:
            results = measure(args, servers, pin.load)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; all processes stopped", file=sys.stderr)
        return 130
    print(f"\nmedians over {args.rounds} rounds of {args.duration} s, pinning: {pin.describe()}, "
          f"{socket.gethostname()}\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
