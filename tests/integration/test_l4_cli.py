"""`pyngress run` with TCP and UDP services, as a real subprocess with two workers: the flags reach the
compiler, every worker serves the streams (SO_REUSEPORT), a UDP client stays on one flow, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: l4}}
spec: {{ports: [{{name: tcp, port: 7000}}, {{name: udp, port: 7000, protocol: UDP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: l4, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: tcp, port: {tcp}}}, {{name: udp, port: {udp}, protocol: UDP}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: tcp-services, namespace: ingress}}
data: {{"{tcp_listen}": "l4/echo:tcp"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: udp-services, namespace: ingress}}
data: {{"{udp_listen}": "l4/echo:udp"}}
"""


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _UdpEcho(socketserver.BaseRequestHandler):
    peers: set[tuple[str, int]] = set()

    def handle(self) -> None:
        data, sock = self.request
        _UdpEcho.peers.add(self.client_address)
        sock.sendto(data, self.client_address)


@pytest.fixture
def pods() -> Iterator[tuple[int, int]]:
    servers: list[socketserver.BaseServer] = [
        socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TcpEcho),
        socketserver.ThreadingUDPServer(("127.0.0.1", 0), _UdpEcho),
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield servers[0].server_address[1], servers[1].server_address[1]  # type: ignore[index]
    for s in servers:
        s.shutdown()
        s.server_close()
    for t in threads:
        t.join(5)


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_echo(port: int, data: bytes) -> bytes | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
    except OSError:
        return None


def _udp_sockets(port: int) -> int:
    """How many UDP sockets are bound to 127.0.0.1:port (/proc/net/udp: local address in hex)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return sum(line.split()[1] == wanted for line in lines)


def test_run_serves_tcp_and_udp_services_with_two_workers(pods: tuple[int, int], tmp_path: Path) -> None:
    tcp_pod, udp_pod = pods
    tcp_listen, udp_listen = _free(socket.SOCK_STREAM), _free(socket.SOCK_DGRAM)
    (tmp_path / "l4.yaml").write_text(MANIFESTS.format(tcp=tcp_pod, udp=udp_pod, tcp_listen=tcp_listen,
                                                       udp_listen=udp_listen))
    argv = [sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path), "--address", "127.0.0.1",
            "--http-port", str(_free(socket.SOCK_STREAM)), "--https-port", "0", "--workers", "2",
            "--shutdown-grace", "2",
            "--tcp-services-configmap", "ingress/tcp-services", "--udp-services-configmap", "ingress/udp-services"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 20
        while _tcp_echo(tcp_listen, b"ping") != b"ping":
            assert proc.poll() is None and time.monotonic() < deadline, "pyngress did not serve the TCP service"
            time.sleep(0.05)
        while _udp_sockets(udp_listen) < 2:  # both workers bound: the kernel's 4-tuple hash is now stable
            assert proc.poll() is None and time.monotonic() < deadline, "the workers did not bind UDP"
            time.sleep(0.05)
        for i in range(20):  # over both workers
            assert _tcp_echo(tcp_listen, b"x%d" % i * 1000) == b"x%d" % i * 1000
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(6)]
        try:
            for c in clients:
                c.settimeout(5)
                c.bind(("127.0.0.1", 0))
                for j in range(4):  # whichever worker the kernel picks, it is the same one every time
                    c.sendto(b"d%d" % j, ("127.0.0.1", udp_listen))
                    assert c.recvfrom(100) == (b"d%d" % j, ("127.0.0.1", udp_listen))
        finally:
            for c in clients:
                c.close()
        assert len(_UdpEcho.peers) == 6  # one flow (one source port at the pod) per client, never two
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    assert output.count(f"stream tcp/{tcp_listen} serving l4/echo:tcp") == 2, output  # both workers
