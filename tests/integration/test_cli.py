"""The `pyngress` command end to end: `check` output and exit codes; `run` with workers, reload and drain.

`run` is started as a real subprocess (`python -m pyngress`) against a threaded HTTP backend in this process;
readiness and reloads are awaited by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.integration import processes
from tests.integration.processes import free_port

wait_for = partial(processes.wait_for, timeout=10.0, retry_on=(OSError,))  # OSError: not listening yet

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: shop}}
spec:
  ingressClassName: pyngress
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
"""


class _Pod(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pod)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def get(port: int, path: str, host: str = "shop.example.com") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def pyngress(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyngress", *args]


def test_check_prints_the_routing_table_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(MANIFESTS.format(port=9001, path="/api"))
    result = subprocess.run(pyngress("check", "-f", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shop.example.com" in result.stdout
    assert "/api" in result.stdout
    assert "127.0.0.1:9001" in result.stdout


def test_check_names_file_object_and_field_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFESTS.format(port=9001, path="api"))  # path must start with "/"
    result = subprocess.run(pyngress("check", "-f", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    line = next(li for li in result.stdout.splitlines() if "Ingress shop/web" in li)
    assert str(bad) in line
    assert "spec.rules[0].http.paths[0].path" in line


def test_run_serves_reloads_on_change_and_sighup_and_drains_on_sigterm(tmp_path: Path, backend: int) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text(MANIFESTS.format(port=backend, path="/api"))
    port = free_port()
    proc = subprocess.Popen(pyngress("run", "-f", str(tmp_path), "--http-port", str(port), "--address",
                                     "127.0.0.1", "--workers", "2", "--shutdown-grace", "5", "--https-port", "0",
                                     "--shutdown-grace-period", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: get(port, "/api/x") == 200)
        assert get(port, "/other") == 404
        # a change on disk is picked up by both workers
        manifest.write_text(MANIFESTS.format(port=backend, path="/other"))
        wait_for(lambda: all(get(port, "/other") == 200 for _ in range(8)))
        assert get(port, "/api/x") == 404
        # SIGHUP reloads too
        manifest.write_text(MANIFESTS.format(port=backend, path="/third"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: all(get(port, "/third") == 200 for _ in range(8)))
        # a broken file keeps the last good configuration serving
        manifest.write_text("kind: [unclosed\n")
        proc.send_signal(signal.SIGHUP)
        for _ in range(20):
            assert get(port, "/third") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "rejected configuration" in output
