"""`pyngress run` as a real process: SIGTERM drain with a slow request in flight, a killed worker restarted on
a socket that never closes, one prober per process group with --workers 2."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.integration import processes
from tests.integration.processes import children, free_port

wait_for = partial(processes.wait_for, retry_on=(OSError,))  # OSError: not listening yet

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    pyngress.io/health-check-path: /healthz
    pyngress.io/health-check-interval: "{interval}"
    nginx.ingress.kubernetes.io/health-check-unhealthy-threshold: "2"
    pyngress.io/health-check-healthy-threshold: "2"
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port_a}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-2, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port_b}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: shop}}
spec:
  ingressClassName: pyngress
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
"""


class Pod(ThreadingHTTPServer):
    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.health_status = 200
        self.probes = 0
        self.served = 0
        self.slow_started = threading.Event()
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Pod

    def do_GET(self) -> None:
        status = 200
        with self.server.lock:
            if self.path == "/healthz":
                self.server.probes += 1
                status = self.server.health_status
            else:
                self.server.served += 1
        if self.path == "/slow":
            self.server.slow_started.set()
            time.sleep(3)  # the backend's own slowness, not test synchronisation
        body = self.server.name.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pods() -> Iterator[tuple[Pod, Pod]]:
    made = (Pod("a"), Pod("b"))
    threads = [threading.Thread(target=p.serve_forever, daemon=True) for p in made]
    for t in threads:
        t.start()
    yield made
    for p in made:
        p.shutdown()
        p.server_close()


def get(port: int, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def start(tmp_path: Path, pods: tuple[Pod, Pod], *args: str, interval: str = "5"
          ) -> tuple[subprocess.Popen[str], int]:
    manifests = MANIFESTS.format(port_a=pods[0].port, port_b=pods[1].port, interval=interval)
    (tmp_path / "all.yaml").write_text(manifests)
    port = free_port()
    if "--https-port" not in args:
        args = (*args, "--https-port", "0")
    command = [sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path), "--http-port", str(port),
               "--address", "127.0.0.1", *args]
    # Output goes to a file, not a pipe: nobody reads a pipe until the end, and once its 64 KiB are full (access
    # log lines) a worker's next diagnostic log line blocks its event loop in write(2): it stops serving.
    with (tmp_path / "pyngress.log").open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: get(port)[0] == 200)
    return proc, port


def finish(proc: subprocess.Popen[str], tmp_path: Path) -> str:
    """Wait for the process to exit and return what it printed."""
    proc.wait(timeout=30)
    return (tmp_path / "pyngress.log").read_text()


def get_https(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the generated default certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_sigterm_drains_a_slow_request_and_refuses_new_connections_after_the_grace_period(
        tmp_path: Path, pods: tuple[Pod, Pod]) -> None:
    proc, port = start(tmp_path, pods, "--shutdown-grace-period", "2", "--shutdown-grace", "20")
    slow: list[tuple[int, str]] = []
    try:
        thread = threading.Thread(target=lambda: slow.append(get(port, "/slow")))
        thread.start()
        assert any(p.slow_started.wait(10) for p in pods)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        # within the grace period: still accepting (readiness failed), telling clients to reconnect (polled:
        # the worker handles the signal a moment after it is sent)
        wait_for(lambda: _closing_response(port), timeout=1.5)
        wait_for(lambda: _refused(port), timeout=10)
        refused_after = time.monotonic() - sent
        assert refused_after >= 1.9
        thread.join(15)
        assert slow and slow[0][0] == 200  # the request in flight completed
    finally:
        output = finish(proc, tmp_path)
    assert proc.returncode == 0, output
    assert "not ready; closing listeners in 2s" in output
    print(f"SIGTERM: listeners closed {refused_after:.2f}s after the signal, slow request completed")


def _closing_response(port: int) -> bool:
    """A new connection is served, and told to close (the proxy is draining)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        return response.getheader("Connection") == "close"
    finally:
        conn.close()


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_killed_workers_are_restarted_and_the_port_never_refuses(tmp_path: Path, pods: tuple[Pod, Pod]) -> None:
    https_port = free_port()
    proc, port = start(tmp_path, pods, "--workers", "2", "--shutdown-grace-period", "0",
                       "--https-port", str(https_port))
    try:
        wait_for(lambda: len(children(proc.pid)) == 2)
        before = children(proc.pid)
        for victim in before:  # every worker at once: only the sockets the parent holds keep the ports open
            os.kill(victim, signal.SIGKILL)
        statuses = [get(port)[0] for _ in range(100)]  # queued in the backlog until the new workers accept
        statuses.append(get_https(https_port))
        wait_for(lambda: len(children(proc.pid)) == 2 and not children(proc.pid) & before)
        statuses += [get(port)[0] for _ in range(100)]
        assert statuses == [200] * 201
    finally:
        proc.send_signal(signal.SIGTERM)
        output = finish(proc, tmp_path)
    assert proc.returncode == 0, output
    for victim in before:
        assert f"worker {victim} (slot" in output and "exited with -9: starting a new one" in output


def test_one_prober_per_group_and_every_worker_follows_it(tmp_path: Path, pods: tuple[Pod, Pod]) -> None:
    a, b = pods
    b.health_status = 500
    proc, port = start(tmp_path, pods, "--workers", "2", "--shutdown-grace-period", "0", interval="0.2")
    try:
        # every worker stops sending to b: requests on fresh connections reach both workers
        wait_for(lambda: all(get(port)[1] == "a" for _ in range(20)), timeout=30)
        served = b.served
        assert all(get(port)[1] == "a" for _ in range(40))
        assert b.served == served
        probes, since = a.probes, time.monotonic()
        wait_for(lambda: a.probes >= probes + 10)
        elapsed = time.monotonic() - since
        # one prober: 10 more probes take at least 9 intervals of 0.2 s -15 % (1.53 s); two would take ~1 s
        assert elapsed >= 9 * 0.2 * 0.85 - 0.01, elapsed
        # b passes again: every worker sends to it again (the access log's request ids carry the worker)
        log = tmp_path / "pyngress.log"
        mark = len(log.read_bytes())
        b.health_status = 200
        wait_for(lambda: {get(port)[1] for _ in range(20)} == {"a", "b"}, timeout=30)

        def both_workers_send_to_b() -> bool:
            get(port)  # traffic: the access log shows a worker's lines within a tick (about a second)
            return len(_workers_sending_to(log, mark, b.port)) == 2

        wait_for(both_workers_send_to_b, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = finish(proc, tmp_path)
        print(output)  # shown when the test fails: which worker judged what
    assert proc.returncode == 0, output


def _workers_sending_to(log: Path, since: int, port: int) -> set[str]:
    """The workers (request id prefixes) whose access-log lines after byte `since` went to 127.0.0.1:port."""
    found = set()
    for line in log.read_bytes()[since:].decode(errors="replace").splitlines():
        if line.startswith("{") and line.endswith("}"):
            entry = json.loads(line)
            if entry.get("upstream_addr") == f"127.0.0.1:{port}":
                found.add(entry["request_id"][:16])
    return found
