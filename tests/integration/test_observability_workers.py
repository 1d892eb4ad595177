"""`pyngress run --workers 2`: one scrape of the parent's admin listener shows both workers' traffic."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyngress.runtime.echo import EchoServer, start_echo

REQUESTS = 40
DEADLINE = 30.0

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  ingressClassName: pyngress
  rules:
  - host: shop.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}]}}
{slices}"""
SLICE = """---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {pod}, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}}}}}]
"""


@pytest.fixture
def pods() -> Iterator[list[EchoServer]]:
    """Two echo pods on a loop in a thread (the proxy under test is another process)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    echoes = [asyncio.run_coroutine_threadsafe(start_echo(f"web-{i}"), loop).result(10) for i in (1, 2)]
    try:
        yield echoes
    finally:
        for echo in echoes:
            asyncio.run_coroutine_threadsafe(echo.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _wait_for(pattern: str, path: Path, count: int, proc: subprocess.Popen[bytes]) -> list[str]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = re.findall(pattern, path.read_text(errors="replace"))
        if len(found) >= count:
            return found
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} x{count} not in: {path.read_text()}")


def _get(port: int, path: str, host: str = "shop.test") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_two_workers_one_scrape(tmp_path: Path, pods: list[EchoServer]) -> None:
    (tmp_path / "shop.yaml").write_text(MANIFESTS.format(
        slices="".join(SLICE.format(pod=p.pod, port=p.port) for p in pods)))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path / "shop.yaml"),
                                 "--workers", "2", "--http-port", "0", "--address", "127.0.0.1",
                                 "--admin-port", "0"], stdout=stdout, stderr=stderr)
    try:
        port = int(_wait_for(r"serving http on 127\.0\.0\.1:(\d+)", err, 2, proc)[0])
        admin = int(_wait_for(r"admin listener on http://127\.0\.0\.1:(\d+)", err, 1, proc)[0])
        for _ in range(REQUESTS):  # a new connection each: SO_REUSEPORT spreads them over the workers
            assert _get(port, "/")[0] == 200
        status, body = _get(admin, "/metrics", host="admin")
        assert status == 200
        text = body.decode()
        counts = re.findall(r'^nginx_ingress_controller_requests\{([^}]*)\} (\S+)$', text, re.M)
        assert [('status="200"' in labels, float(n)) for labels, n in counts] == [(True, REQUESTS)]
        assert re.search(r"^pyngress_workers\{[^}]*\} 2\.0$", text, re.M)
        doc: Any = json.loads(_get(admin, "/status", host="admin")[1])
        workers = doc["workers"]
        assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
        assert all(w["requests"] > 0 for w in workers), workers  # both served: the sum really is a merge
        assert sum(w["requests"] for w in workers) == REQUESTS
        assert sum(e["requests"] for e in doc["endpoints"]) == REQUESTS
        assert _get(admin, "/readyz", host="admin")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, err.read_text()
    lines = [json.loads(line) for line in out.read_text().splitlines()]  # both workers' access logs
    assert len(lines) == REQUESTS and {line["status"] for line in lines} == {200}
    assert {line["upstream_addr"] for line in lines} == {f"127.0.0.1:{p.port}" for p in pods}
    assert os.path.getsize(err) > 0
