"""HTTP/2 requests per second of pyngress against nginx, both proxying h2c clients to one HTTP/1.1 backend.

Method (as bench/run.py, whose helpers it reuses):
* One nginx backend (`200 hello from backend`) behind both proxies, with upstream keepalive on both.
* nginx: `listen ... http2` in clear text (h2c with prior knowledge; nginx 1.22's spelling of `http2 on`),
  `http2_max_concurrent_streams 128`, the same forwarding headers pyngress adds. pyngress: `pyngress run` on
  manifests (one worker), which serves h2c with prior knowledge on its plain port.
* h2load (Debian `nghttp2-client`) with `-c` connections, `-m` concurrent streams each, `-D` seconds, after a
  warm-up run; interleaved rounds (which proxy goes first alternates); medians and the pyngress/nginx ratio.
* Pinning as in run.py: the proxy on CPU 0, h2load and the backend on the others.

Usage: python bench/http2.py [--rounds 3] [--duration 10] [--connections 10] [--streams 10]
                          [--pyngress-cmd "python -m pyngress"] [--pin | --no-pin]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from run import (
    HTTP_COMMON,
    NGINX_COMMON,
    PYNGRESS,
    BenchError,
    Pinning,
    Server,
    backend_conf,
    choose_pinning,
    free_port,
    nginx_binary,
    pinned,
    raise_on_sigterm,
    start_nginx,
    start_pyngress,
    stop_server,
    wait_ready,
)

NGINX_PROXY = "nginx"
WARMUP_SECONDS = 2


def h2_proxy_conf(prefix: Path, port: int, backend_port: int) -> str:
    return (NGINX_COMMON.format(prefix=prefix) + "worker_processes 1;\nhttp {\n"
            + HTTP_COMMON.format(prefix=prefix) + textwrap.indent(textwrap.dedent(f"""\
        http2_max_concurrent_streams 128;
        upstream backend {{
            server 127.0.0.1:{backend_port};
            keepalive 64;
            keepalive_requests 100000;
        }}
        server {{
            listen 127.0.0.1:{port} http2;
            location / {{
                proxy_pass http://backend;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $host;
                proxy_set_header X-Real-IP $remote_addr;
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                proxy_set_header X-Forwarded-Proto $scheme;
                proxy_set_header X-Forwarded-Host $host;
                proxy_set_header X-Forwarded-Port $server_port;
                proxy_set_header X-Request-ID $request_id;
            }}
        }}
        """), "    ") + "}\n")


def h2load_argv(args: argparse.Namespace, port: int, duration: int) -> list[str]:
    return ["h2load", "-c", str(args.connections), "-m", str(args.streams), "-t", "1", "-D", str(duration),
            f"http://127.0.0.1:{port}/"]


def run_h2load(args: argparse.Namespace, port: int, duration: int, cpus: str | None) -> tuple[float, int]:
    """(req/s, failed requests) of one h2load run."""
    argv = pinned(h2load_argv(args, port, duration), cpus)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", done.stdout)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", done.stdout)
    if done.returncode != 0 or rps is None or counts is None:
        raise BenchError(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    if int(counts.group(1)) == 0:
        raise BenchError(f"{shlex.join(argv)}: no request done:\n{done.stdout}")
    return float(rps.group(1)), int(counts.group(3))


def wait_h2_ready(server: Server, args: argparse.Namespace, cpus: str | None) -> None:
    wait_port = time.monotonic() + 15
    while time.monotonic() < wait_port:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited:\n{server.log_tail()}")
        probe = subprocess.run(["h2load", "-n", "1", "-c", "1", f"http://127.0.0.1:{server.port}/"],
                               capture_output=True, text=True, timeout=10, check=False)
        if "1 succeeded" in probe.stdout:
            return
        time.sleep(0.2)
    raise BenchError(f"{server.name} does not answer HTTP/2 on {server.port}:\n{server.log_tail()}")


@contextlib.contextmanager
def running(nginx: str, args: argparse.Namespace, pin: Pinning) -> Iterator[dict[str, Server]]:
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="pyngress-h2-bench-") as tmp:
        workdir = Path(tmp)
        try:
            backend_port = free_port()
            backend = start_nginx("backend", nginx, backend_conf(workdir / "backend", backend_port),
                                  backend_port, workdir, pin.load)
            servers.append(backend)
            wait_ready(backend)
            nginx_port, pyngress_port = free_port(), free_port()
            proxy = start_nginx(NGINX_PROXY, nginx, h2_proxy_conf(workdir / NGINX_PROXY, nginx_port,
                                                                  backend_port), nginx_port, workdir, pin.proxy)
            servers.append(proxy)
            ours = start_pyngress(shlex.split(args.pyngress_cmd), pyngress_port, backend_port, 1, workdir,
                                  pin.proxy)
            servers.append(ours)
            for server in (proxy, ours):
                wait_h2_ready(server, args, pin.load)
            yield {NGINX_PROXY: proxy, PYNGRESS: ours}
        finally:
            for server in reversed(servers):
                stop_server(server)


def measure(args: argparse.Namespace, servers: dict[str, Server], pin: Pinning) -> dict[str, list[float]]:
    for name, server in servers.items():
        print(f"warm-up: {name} ({WARMUP_SECONDS} s)", flush=True)
        run_h2load(args, server.port, WARMUP_SECONDS, pin.load)
    results: dict[str, list[float]] = {name: [] for name in servers}
    for number in range(1, args.rounds + 1):
        order = list(servers) if number % 2 else list(reversed(servers))
        for name in order:
            rps, failed = run_h2load(args, servers[name].port, args.duration, pin.load)
            results[name].append(rps)
            flag = f"  ({failed} FAILED)" if failed else ""
            print(f"round {number}: {name:9} {rps:10.0f} req/s{flag}", flush=True)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per h2load run")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per connection (-m)")
    parser.add_argument("--pyngress-cmd", default=f"{shlex.quote(sys.executable)} -m pyngress")
    parser.add_argument("--pin", dest="pin", action="store_true", default=None)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    nginx = nginx_binary()
    if nginx is None or shutil.which("h2load") is None:
        print("bench: needs nginx and h2load (apt-get install -y nginx-light nghttp2-client)", file=sys.stderr)
        return 2
    try:
        pin = choose_pinning(args.pin, 1)
        print(f"pinning: {pin.describe()}; h2load: {shlex.join(h2load_argv(args, 0, args.duration))}",
              flush=True)
        with running(nginx, args, pin) as servers:
            results = measure(args, servers, pin)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"median req/s: nginx {medians[NGINX_PROXY]:.0f}, pyngress {medians[PYNGRESS]:.0f}, "
          f"pyngress/nginx {medians[PYNGRESS] / medians[NGINX_PROXY]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
