"""TLS: handshakes per second and HTTPS keep-alive requests per second, pyngress against nginx.

Method (as bench/run.py, whose helpers this reuses: same nginx backend, one worker each, interleaved rounds,
pinning, medians and ratios):

* One certificate for both proxies: an ECDSA P-256 certificate for `bench.local` made at start. nginx reads
  it from files; pyngress from a `kubernetes.io/tls` Secret named as `--default-ssl-certificate`. wrk sends no
  SNI to 127.0.0.1, so both serve it as their default certificate.
* Both: TLS 1.2 and 1.3, session tickets on, HTTP/1.1 with keep-alive to the same nginx backend.
* `handshakes`: `wrk -H "Connection: close"`: every request is a new TCP connection and a full TLS handshake
  (wrk does not resume sessions), so requests/s is handshakes/s.
* `keepalive`: plain `wrk` over HTTPS: requests/s on established TLS connections.
* `pyngress-base` (with --baseline-cmd): another pyngress build measured in the same interleaved rounds, for
  before/after comparisons on a noisy machine.
* `pyngress-peek` (with --peek): a second pyngress whose configuration also has an `ssl-passthrough` Ingress
  for another host, so it peeks at every ClientHello before terminating: its handshakes/s against plain
  pyngress is the cost of the peek path (see runtime/https_listener.py).

Usage: python bench/tls.py [--rounds 3] [--duration 5] [--connections 50] [--peek] [--pin | --no-pin]
                           [--pyngress-cmd "python -m pyngress"]
                           [--baseline-cmd "env PYTHONPATH=/other/checkout/src python -m pyngress"]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shlex
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import run as base  # bench/run.py
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX, PYNGRESS, PEEK, BASE = "nginx", "pyngress", "pyngress-peek", "pyngress-base"
SCENARIOS = ("handshakes", "keepalive")


def certificate(workdir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.local")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.local")]), critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = workdir / "bench.crt", workdir / "bench.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def nginx_conf(prefix: Path, port: int, backend_port: int, crt: Path, key: Path) -> str:
    conf = base.proxy_conf(prefix, port, backend_port, 1)
    return conf.replace(f"listen 127.0.0.1:{port};", textwrap.dedent(f"""\
        listen 127.0.0.1:{port} ssl;
                ssl_certificate {crt};
                ssl_certificate_key {key};
                ssl_protocols TLSv1.2 TLSv1.3;
                ssl_session_tickets on;"""))


def secret_yaml(crt: Path, key: Path) -> str:
    import base64

    data = {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes()}
    lines = "".join(f"  {k}: {base64.b64encode(v).decode()}\n" for k, v in data.items())
    return ("apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: bench-tls, namespace: "
            "default}\ndata:\n" + lines)


PASSTHROUGH = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: passthrough
  namespace: default
  annotations: {nginx.ingress.kubernetes.io/ssl-passthrough: "true"}
spec:
  ingressClassName: pyngress
  rules:
  - host: elsewhere.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: bench, port: {name: http}}}}]}
"""


def start_pyngress(name: str, cmd: Sequence[str], port: int, backend_port: int, workdir: Path, crt: Path,
                   key: Path, cpus: str | None, passthrough: bool) -> base.Server:
    mdir = workdir / f"manifests-{name}"
    mdir.mkdir()
    for filename, text in base.manifests(backend_port).items():
        (mdir / filename).write_text(text)
    (mdir / "secret.yaml").write_text(secret_yaml(crt, key))
    if passthrough:
        (mdir / "passthrough.yaml").write_text(PASSTHROUGH)
    argv = [*cmd, "run", "-f", str(mdir), "--address", "127.0.0.1", "--http-port", str(base.free_port()),
            "--https-port", str(port), "--default-ssl-certificate", "default/bench-tls"]
    return base.start_server(name, base.pinned(argv, cpus), port, workdir)


def https_ready(server: base.Server, timeout: float = base.READY_TIMEOUT) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise base.BenchError(f"{server.name} exited early:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", server.port), 1) as raw, ctx.wrap_socket(raw) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        time.sleep(0.1)
    raise base.BenchError(f"{server.name} did not answer over TLS:\n{server.log_tail()}")


def run_wrk(args: argparse.Namespace, scenario: str, server: base.Server, duration: int,
            cpus: str | None) -> base.WrkResult:
    close = ["-H", "Connection: close"] if scenario == "handshakes" else []
    argv = base.pinned(["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency",
                        *close, f"https://127.0.0.1:{server.port}/"], cpus)
    before = base.group_cpu_ticks(server.proc.pid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = base.group_cpu_ticks(server.proc.pid)
    if done.returncode != 0:
        raise base.BenchError(f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}")
    result = base.parse_wrk(done.stdout)
    if result.requests:
        per = 1e6 / os.sysconf("SC_CLK_TCK") / result.requests
        result = base.dataclasses.replace(result, user_us=(after[0] - before[0]) * per,
                                          sys_us=(after[1] - before[1]) * per)
    return result


@contextlib.contextmanager
def servers(nginx: str, args: argparse.Namespace, pin: base.Pinning) -> Iterator[dict[str, base.Server]]:
    started: list[base.Server] = []
    with tempfile.TemporaryDirectory(prefix="pyngress-tls-bench-") as tmp:
        workdir = Path(tmp)
        try:
            crt, key = certificate(workdir)
            bport = base.free_port()
            backend = base.start_nginx("backend", nginx, base.backend_conf(workdir / "backend", bport), bport,
                                       workdir, pin.load)
            started.append(backend)
            base.wait_ready(backend)
            nport = base.free_port()
            out = {NGINX: base.start_nginx(NGINX, nginx, nginx_conf(workdir / NGINX, nport, bport, crt, key),
                                           nport, workdir, pin.proxy)}
            out[PYNGRESS] = start_pyngress(PYNGRESS, args.pyngress_cmd, base.free_port(), bport, workdir, crt,
                                           key, pin.proxy, passthrough=False)
            if args.baseline_cmd:
                out[BASE] = start_pyngress(BASE, args.baseline_cmd, base.free_port(), bport, workdir, crt, key,
                                           pin.proxy, passthrough=False)
            if args.peek:
                out[PEEK] = start_pyngress(PEEK, args.pyngress_cmd, base.free_port(), bport, workdir, crt, key,
                                           pin.proxy, passthrough=True)
            started += out.values()
            for server in out.values():
                https_ready(server)
            yield out
        finally:
            for server in reversed(started):
                base.stop_server(server)


def measure(args: argparse.Namespace, running: dict[str, base.Server], pin: base.Pinning
            ) -> dict[tuple[str, str], list[base.WrkResult]]:
    results: dict[tuple[str, str], list[base.WrkResult]] = {}
    for name, server in running.items():
        run_wrk(args, "keepalive", server, base.WARMUP_SECONDS, pin.load)
    for i in range(args.rounds):
        for scenario in SCENARIOS:
            names = list(running) if i % 2 == 0 else list(reversed(running))
            for name in names:
                if name == PEEK and scenario != "handshakes":
                    continue
                r = run_wrk(args, scenario, running[name], args.duration, pin.load)
                results.setdefault((scenario, name), []).append(r)
                print(f"round {i + 1} {scenario:10} {name:14} {r.rps:10,.0f} req/s  p99 {r.p99_ms:6.2f} ms  "
                      f"user {r.user_us:6.1f} us/req  sys {r.sys_us:6.1f} us/req"
                      + ("" if r.clean else "  ERRORS"), flush=True)
    return results


def report(results: dict[tuple[str, str], list[base.WrkResult]]) -> str:
    lines = ["| scenario | proxy | req/s (median) | p99 ms | user µs/req | sys µs/req | vs nginx |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for (scenario, name), runs in sorted(results.items()):
        rps = statistics.median(r.rps for r in runs)
        nginx = statistics.median(r.rps for r in results[(scenario, NGINX)])
        lines.append(f"| {scenario} | {name} | {rps:,.0f} | {statistics.median(r.p99_ms for r in runs):.2f} | "
                     f"{statistics.median(r.user_us for r in runs):.1f} | "
                     f"{statistics.median(r.sys_us for r in runs):.1f} | {rps / nginx:.2f} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--peek", action="store_true", help="also measure pyngress with ssl-passthrough in use")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--pyngress-cmd", default="pyngress", type=shlex.split)
    p.add_argument("--baseline-cmd", type=shlex.split, default=None,
                   help="also run this pyngress (another checkout: 'env PYTHONPATH=/old/src python -m "
                        "pyngress') as pyngress-base, interleaved: before/after numbers from one run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, base.raise_on_sigterm)
    try:
        nginx = base.ensure_tools()
        pin = base.choose_pinning(args.pin, 1)
        print(f"pinning: {pin.describe()}", flush=True)
        with servers(nginx, args, pin) as running:
            results = measure(args, running, pin)
    except base.BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print("\n" + report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
