"""Throughput and latency of pyngress against nginx, both proxying to the same nginx backend.

Method
------
* One backend for both proxies: an nginx that answers `200 hello from backend` to everything. Both proxies
  forward to it, so the only thing that differs between the two measurements is the proxy.
* One worker each (`--workers 1`): a Python event loop is single threaded, so we compare one pyngress worker to
  one nginx worker. More workers mostly measure the machine's core count, not the proxy.
* Upstream keepalive on both: nginx gets `keepalive 64` with HTTP/1.1 to the backend, pyngress pools upstream
  connections by default. Without it nginx would pay a TCP handshake per request and the comparison would
  flatter pyngress.
* Comparable work: nginx sets the same forwarding headers pyngress adds (X-Forwarded-For, X-Real-IP,
  X-Forwarded-Proto/Host/Port, X-Request-ID, Host). Access logs are off on all three servers.
* Interleaved rounds: each round runs wrk against nginx and against pyngress back to back, and which one goes
  first alternates. Machine noise (thermal throttling, a neighbour on the host, page cache) then hits both
  roughly equally instead of biasing whichever ran during the bad minute. Medians over rounds are reported.
* Pinning (default on when `taskset` exists and there are enough cores): the proxy under test runs on CPU 0,
  wrk and the backend on the other CPUs. On a 2-core machine the scheduler otherwise moves wrk, the backend and
  the proxy around and results swing by +-20 % from run to run; pinning gives each its own core.
* A 2 s warm-up of each proxy before round 1 (connection pools, CPU caches, first-request costs).

Everything listens on 127.0.0.1 only. Every process is started in its own process group and torn down
(SIGTERM, wait, SIGKILL) in `finally`, also on Ctrl-C; temporary directories are removed.

Usage: python bench/run.py [--rounds 3] [--duration 10] [--connections 50] [--threads 1] [--workers 1]
                           [--pin | --no-pin] [--pyngress-cmd "python -m pyngress"]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import http.client
import os
import platform
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
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "latest.md"
NGINX_FALLBACK = "/usr/sbin/nginx"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
WARMUP_SECONDS = 2
NOISY_LOG_BYTES = 1_000_000  # more pyngress output than this during a run suggests per-request logging
RPS_TARGET = 0.9  # pyngress rps / nginx rps must be at least this
P99_TARGET = 1.3  # pyngress p99 / nginx p99 must be at most this
NGINX_PROXY = "nginx"
PYNGRESS = "pyngress"


class BenchError(Exception):
    """A setup step failed; the message says which and why."""


# --------------------------------------------------------------------------------------------------- tools


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return NGINX_FALLBACK if os.access(NGINX_FALLBACK, os.X_OK) else None


def apt_install(packages: Sequence[str]) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"+ apt-get install -y {' '.join(packages)}", flush=True)
    return subprocess.run(["apt-get", "install", "-y", *packages], env=env, check=False).returncode == 0


def ensure_tools() -> str:
    """Install wrk and nginx when missing; return the nginx binary path."""
    if shutil.which("wrk") and nginx_binary():
        return nginx_binary() or NGINX_FALLBACK
    if not shutil.which("apt-get"):
        raise BenchError("wrk and/or nginx are missing and apt-get is not available: install them by hand")
    for attempt in ("as is", "after apt-get update"):
        if attempt != "as is":
            print("+ apt-get update", flush=True)
            subprocess.run(["apt-get", "update"], check=False)
        if apt_install(["wrk", "nginx-light"]) or apt_install(["wrk", "nginx"]):
            break
    nginx = nginx_binary()
    if not (shutil.which("wrk") and nginx):
        raise BenchError("could not install wrk and nginx with apt-get (are you root?)")
    return nginx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------- processes


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def start_server(name: str, argv: Sequence[str], port: int, workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        # own session: cleanup signals the whole group (pyngress and nginx may fork workers)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True)
    return Server(name, port, proc, log)


def stop_server(server: Server) -> None:
    proc = server.proc
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no forked worker of its group is left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def http_status(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/", headers={"Host": "bench.local"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    status: int | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with code {server.proc.returncode} before it was ready; "
                             f"its output:\n{server.log_tail()}")
        status = http_status(server.port)
        if status == 200:
            return
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not answer 200 on 127.0.0.1:{server.port} within {timeout:.0f} s "
                     f"(last status: {status}); its output:\n{server.log_tail()}")


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


# ---------------------------------------------------------------------------------------------------- nginx

NGINX_COMMON = """\
daemon off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
"""

HTTP_COMMON = """\
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000;
    keepalive_timeout 75s;
"""


def backend_conf(prefix: Path, port: int) -> str:
    return NGINX_COMMON.format(prefix=prefix) + "master_process off;\nhttp {\n" + HTTP_COMMON.format(
        prefix=prefix) + textwrap.indent(textwrap.dedent(f"""\
        server {{
            listen 127.0.0.1:{port} reuseport;
            location / {{
                default_type text/plain;
                return 200 "hello from backend\\n";
            }}
        }}
        """), "    ") + "}\n"


def proxy_conf(prefix: Path, port: int, backend_port: int, workers: int) -> str:
    return (NGINX_COMMON.format(prefix=prefix) + f"worker_processes {workers};\nhttp {{\n"
            + HTTP_COMMON.format(prefix=prefix) + textwrap.indent(textwrap.dedent(f"""\
        upstream backend {{
            server 127.0.0.1:{backend_port};
            keepalive 64;
            keepalive_requests 100000;
        }}
        server {{
            listen 127.0.0.1:{port};
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


def start_nginx(name: str, nginx: str, conf_text: str, port: int, workdir: Path, cpus: str | None) -> Server:
    prefix = workdir / name
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    argv = [nginx, "-e", "stderr", "-p", str(prefix), "-c", str(conf)]
    return start_server(name, pinned(argv, cpus), port, workdir)


# ------------------------------------------------------------------------------------------------- pyngress


def manifests(backend_port: int) -> dict[str, str]:
    """The Kubernetes objects pyngress serves in file mode: Service + EndpointSlice + Ingress + ConfigMap."""
    return {
        "service.yaml": textwrap.dedent("""\
            apiVersion: v1
            kind: Service
            metadata:
              name: bench
              namespace: default
            spec:
              ports:
                - name: http
                  port: 80
                  targetPort: 8080
            """),
        "endpointslice.yaml": textwrap.dedent(f"""\
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: bench-1
              namespace: default
              labels:
                kubernetes.io/service-name: bench
            addressType: IPv4
            ports:
              - name: http
                port: {backend_port}
                protocol: TCP
            endpoints:
              - addresses: ["127.0.0.1"]
                conditions:
                  ready: true
            """),
        "ingress.yaml": textwrap.dedent("""\
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata:
              name: bench
              namespace: default
            spec:
              ingressClassName: pyngress
              rules:
                - http:
                    paths:
                      - path: /
                        pathType: Prefix
                        backend:
                          service:
                            name: bench
                            port:
                              name: http
            """),
        "configmap.yaml": textwrap.dedent("""\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: pyngress
              namespace: default
            data:
              keep-alive-requests: "100000"
              disable-access-log: "true"
            """),
    }


def start_pyngress(cmd: Sequence[str], port: int, backend_port: int, workers: int, workdir: Path,
                   cpus: str | None) -> Server:
    mdir = workdir / "manifests"
    mdir.mkdir()
    for filename, text in manifests(backend_port).items():
        (mdir / filename).write_text(text)
    argv = [*cmd, "run", "-f", str(mdir), "--address", "127.0.0.1", "--http-port", str(port),
            "--workers", str(workers), "--https-port", "0"]
    return start_server(PYNGRESS, pinned(argv, cpus), port, workdir)


# ------------------------------------------------------------------------------------------------------ wrk


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    elapsed_s: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout
    user_us: float = 0.0  # the proxy's user-space CPU per request (all its processes), in microseconds
    sys_us: float = 0.0  # the proxy's kernel CPU per request

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0 and self.requests > 0


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, re.MULTILINE)

    rps = find(r"^Requests/sec:\s+([\d.]+)")
    p50 = find(r"^\s+50%\s+(\S+)")
    p99 = find(r"^\s+99%\s+(\S+)")
    total = find(r"^\s+(\d+) requests in (\S+),")
    if not (rps and p50 and p99 and total):
        raise BenchError(f"could not parse wrk output (was --latency given?):\n{output}")
    errors = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    non_2xx = find(r"Non-2xx or 3xx responses: (\d+)")
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=to_ms(p50.group(1)),
        p99_ms=to_ms(p99.group(1)),
        requests=int(total.group(1)),
        elapsed_s=to_ms(total.group(2)) / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def wrk_argv(args: argparse.Namespace, port: int, duration: int) -> list[str]:
    return ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency",
            f"http://127.0.0.1:{port}/"]


def group_cpu_ticks(pgid: int) -> tuple[int, int]:
    """(user, system) clock ticks used so far by every live process of a process group (/proc/PID/stat)."""
    user = system = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(11) stime(12)
            user += int(fields[11])
            system += int(fields[12])
    return user, system


def run_wrk(args: argparse.Namespace, port: int, duration: int, cpus: str | None,
            server: Server | None = None) -> WrkResult:
    """One wrk run; with `server`, also the CPU its process group spent per request (user/sys split)."""
    argv = pinned(wrk_argv(args, port, duration), cpus)
    before = group_cpu_ticks(server.proc.pid) if server else (0, 0)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = group_cpu_ticks(server.proc.pid) if server else (0, 0)
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed with code {done.returncode}:\n{done.stdout}{done.stderr}")
    result = parse_wrk(done.stdout)
    if result.elapsed_s < 0.9 * duration:  # wrk exits 0 with partial results when interrupted
        raise BenchError(f"wrk stopped after {result.elapsed_s:.1f} s of {duration} s")
    if server and result.requests:
        per_request = 1e6 / os.sysconf("SC_CLK_TCK") / result.requests
        result = dataclasses.replace(result, user_us=(after[0] - before[0]) * per_request,
                                     sys_us=(after[1] - before[1]) * per_request)
    return result


# --------------------------------------------------------------------------------------------------- report

Round = dict[str, WrkResult]


@dataclass(frozen=True)
class Summary:
    rps: dict[str, float]
    p50: dict[str, float]
    p99: dict[str, float]
    user: dict[str, float]
    system: dict[str, float]
    # the median over rounds of each round's own ratio: the two runs of a round are back to back, so this
    # cancels a machine that drifts between rounds (a neighbour starting, the kernel's cost per packet moving)
    paired_rps: float = 0.0
    paired_p99: float = 0.0

    @property
    def rps_ratio(self) -> float:
        return self.rps[PYNGRESS] / self.rps[NGINX_PROXY] if self.rps[NGINX_PROXY] else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.p99[PYNGRESS] / self.p99[NGINX_PROXY] if self.p99[NGINX_PROXY] else float("inf")


def summarize(rounds: Sequence[Round]) -> Summary:
    names = (NGINX_PROXY, PYNGRESS)
    return Summary(
        rps={n: statistics.median(r[n].rps for r in rounds) for n in names},
        p50={n: statistics.median(r[n].p50_ms for r in rounds) for n in names},
        p99={n: statistics.median(r[n].p99_ms for r in rounds) for n in names},
        user={n: statistics.median(r[n].user_us for r in rounds) for n in names},
        system={n: statistics.median(r[n].sys_us for r in rounds) for n in names},
        paired_rps=statistics.median(r[PYNGRESS].rps / r[NGINX_PROXY].rps for r in rounds
                                     if r[NGINX_PROXY].rps) if rounds else 0.0,
        paired_p99=statistics.median(r[PYNGRESS].p99_ms / r[NGINX_PROXY].p99_ms for r in rounds
                                     if r[NGINX_PROXY].p99_ms) if rounds else 0.0,
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def round_rows(number: int, rnd: Round) -> list[list[str]]:
    return [[str(number), name, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.user_us:.1f}",
             f"{r.sys_us:.1f}", str(r.non_2xx), str(r.socket_errors), "" if r.clean else "ERRORS"]
            for name, r in rnd.items()]


ROUND_HEADER = ["round", "proxy", "req/s", "p50 ms", "p99 ms", "user µs/req", "sys µs/req", "non-2xx/3xx",
                "socket errors", "flag"]
SUMMARY_HEADER = ["", "nginx", "pyngress", "pyngress/nginx", "target", "result"]


def summary_rows(s: Summary) -> list[list[str]]:
    return [
        ["median req/s", f"{s.rps[NGINX_PROXY]:,.0f}", f"{s.rps[PYNGRESS]:,.0f}", f"{s.rps_ratio:.2f}",
         f">= {RPS_TARGET}", verdict(s.rps_ratio >= RPS_TARGET)],
        ["req/s, paired by round", "", "", f"{s.paired_rps:.2f}", f">= {RPS_TARGET}",
         verdict(s.paired_rps >= RPS_TARGET)],
        ["median p50 ms", f"{s.p50[NGINX_PROXY]:.2f}", f"{s.p50[PYNGRESS]:.2f}",
         f"{s.p50[PYNGRESS] / s.p50[NGINX_PROXY]:.2f}" if s.p50[NGINX_PROXY] else "-", "", ""],
        ["median p99 ms", f"{s.p99[NGINX_PROXY]:.2f}", f"{s.p99[PYNGRESS]:.2f}", f"{s.p99_ratio:.2f}",
         f"<= {P99_TARGET}", verdict(s.p99_ratio <= P99_TARGET)],
        ["p99, paired by round", "", "", f"{s.paired_p99:.2f}", f"<= {P99_TARGET}",
         verdict(s.paired_p99 <= P99_TARGET)],
        # where the time goes: the proxy's own CPU per request, user space and kernel
        ["median user µs/req", f"{s.user[NGINX_PROXY]:.1f}", f"{s.user[PYNGRESS]:.1f}",
         f"{s.user[PYNGRESS] / s.user[NGINX_PROXY]:.2f}" if s.user[NGINX_PROXY] else "-", "", ""],
        ["median sys µs/req", f"{s.system[NGINX_PROXY]:.1f}", f"{s.system[PYNGRESS]:.1f}",
         f"{s.system[PYNGRESS] / s.system[NGINX_PROXY]:.2f}" if s.system[NGINX_PROXY] else "-", "", ""],
    ]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


# -------------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_output(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def git_revision() -> str:
    rev = command_output(["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(BENCH_DIR), "status", "--porcelain", "--untracked-files=no"])
    return rev + (" (uncommitted changes)" if dirty not in ("unknown", "") else "")


def environment(args: argparse.Namespace, nginx: str, pin: Pinning) -> list[tuple[str, str]]:
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}"),
        ("kernel", platform.release()),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("pyngress", f"{package_version('pyngress')}, git {git_revision()}"),
        ("uvloop / httptools", f"{package_version('uvloop')} / {package_version('httptools')}"),
        ("nginx", command_output([nginx, "-v"])),
        ("wrk", command_output(["wrk", "-v"])),
        ("pyngress command", shlex.join(args.pyngress_cmd)),
        ("wrk parameters", f"{shlex.join(wrk_argv(args, 0, args.duration)).replace(':0/', ':PORT/')}, "
                           f"{args.rounds} interleaved rounds, {WARMUP_SECONDS} s warm-up each"),
        ("workers", f"{args.workers} per proxy, access logs off, upstream keepalive on"),
        ("pinning", pin.describe()),
    ]


def write_markdown(env: Sequence[tuple[str, str]], rounds: Sequence[Round], summary: Summary) -> Path:
    rows = [row for i, rnd in enumerate(rounds, 1) for row in round_rows(i, rnd)]
    text = "\n\n".join([
        "## Benchmark: pyngress vs nginx (one worker each, same nginx backend)",
        "\n".join(f"- **{k}**: {v}" for k, v in env),
        "### Summary (medians over rounds)",
        md_table(SUMMARY_HEADER, summary_rows(summary)),
        "### Rounds",
        md_table(ROUND_HEADER, rows),
    ]) + "\n"
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(text)
    return RESULTS_FILE


# ---------------------------------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Pinning:
    proxy: str | None  # CPU list for the proxy under test, None = not pinned
    load: str | None  # CPU list for wrk and the backend

    def describe(self) -> str:
        if not self.proxy:
            return "off"
        return f"on (proxy on CPU {self.proxy}, wrk and backend on CPU {self.load})"


def choose_pinning(requested: bool | None, workers: int) -> Pinning:
    ncpu = len(os.sched_getaffinity(0))
    possible = shutil.which("taskset") is not None and ncpu >= workers + 1
    if requested is False or (requested is None and not possible):
        return Pinning(None, None)
    if not possible:
        raise BenchError(f"--pin needs taskset and at least {workers + 1} CPUs (have {ncpu})")
    proxy = "0" if workers == 1 else f"0-{workers - 1}"
    load = str(workers) if workers == ncpu - 1 else f"{workers}-{ncpu - 1}"
    return Pinning(proxy, load)


def measure(args: argparse.Namespace, servers: dict[str, Server], pin: Pinning) -> list[Round]:
    for name, server in servers.items():
        print(f"warm-up: {name} ({WARMUP_SECONDS} s)", flush=True)
        run_wrk(args, server.port, WARMUP_SECONDS, pin.load)
    rounds: list[Round] = []
    for i in range(args.rounds):
        order = [NGINX_PROXY, PYNGRESS] if i % 2 == 0 else [PYNGRESS, NGINX_PROXY]
        rnd: Round = {}
        for name in order:
            print(f"round {i + 1}/{args.rounds}: {name} ({args.duration} s)", flush=True)
            rnd[name] = run_wrk(args, servers[name].port, args.duration, pin.load, servers[name])
        rnd = {name: rnd[name] for name in (NGINX_PROXY, PYNGRESS)}
        print(text_table(ROUND_HEADER, round_rows(i + 1, rnd)) + "\n", flush=True)
        rounds.append(rnd)
    return rounds


@contextlib.contextmanager
def running(nginx: str, args: argparse.Namespace, pin: Pinning) -> Iterator[dict[str, Server]]:
    """Start backend, nginx proxy and pyngress; stop all of them and remove the temp dir on exit."""
    started: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="pyngress-bench-") as tmp:
        workdir = Path(tmp)
        try:
            bport, nport, pport = free_port(), free_port(), free_port()
            backend = start_nginx("backend", nginx, backend_conf(workdir / "backend", bport), bport, workdir,
                                  pin.load)
            started.append(backend)
            wait_ready(backend)
            proxy = start_nginx(NGINX_PROXY, nginx, proxy_conf(workdir / NGINX_PROXY, nport, bport, args.workers),
                                nport, workdir, pin.proxy)
            started.append(proxy)
            ours = start_pyngress(args.pyngress_cmd, pport, bport, args.workers, workdir, pin.proxy)
            started.append(ours)
            wait_ready(proxy)
            wait_ready(ours)
            print(f"backend :{bport}, nginx proxy :{nport}, pyngress :{pport}; pinning {pin.describe()}",
                  flush=True)
            yield {NGINX_PROXY: proxy, PYNGRESS: ours}
        finally:
            for server in reversed(started):
                stop_server(server)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--workers", type=int, default=1, help="workers per proxy (default 1)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                   help="pin the proxy to CPU 0 and wrk + backend to the others with taskset "
                        "(default: on when taskset exists and there are enough CPUs)")
    p.add_argument("--pyngress-cmd", default="pyngress", type=shlex.split,
                   help='command that starts pyngress (default "pyngress"; e.g. "python -m pyngress")')
    args = p.parse_args(argv)
    for name in ("rounds", "duration", "connections", "threads", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.connections < args.threads:
        p.error("--connections must be at least --threads (wrk's rule)")
    return args


def raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)  # so that `finally` cleans up on kill too
    try:
        nginx = ensure_tools()
        pin = choose_pinning(args.pin, args.workers)
        print(f"pinning: {pin.describe()}", flush=True)
        with running(nginx, args, pin) as servers:
            rounds = measure(args, servers, pin)
            log_bytes = servers[PYNGRESS].log.stat().st_size
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; all processes stopped", file=sys.stderr)
        return 130
    summary = summarize(rounds)
    if log_bytes > NOISY_LOG_BYTES:
        print(f"WARNING: pyngress wrote {log_bytes / 1e6:.1f} MB of logs during the bench (access logging on?); "
              "its results include that cost")
    print("summary (medians over rounds)")
    print(text_table(SUMMARY_HEADER, summary_rows(summary)))
    if any(not r.clean for rnd in rounds for r in rnd.values()):
        print("WARNING: some runs had non-2xx/3xx responses or socket errors (flagged ERRORS above)")
    path = write_markdown(environment(args, nginx, pin), rounds, summary)
    print(f"\nMarkdown report: {path.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
