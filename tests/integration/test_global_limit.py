"""Global rate limits with a real redis-server started by the test (skipped only where the binary is absent:
CI installs it): two pyngress processes share one limit; Redis killed mid-test fails open (or closed)."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import processes
import pytest
from harness import EchoBackend, RawClient, async_test, route, service, snapshot
from processes import free_port

from pyngress.model import ProxySettings
from pyngress.model.flow import FlowSpec, GlobalLimitSpec
from pyngress.runtime.server import ProxyServer

wait_for = partial(processes.wait_for, timeout=10.0)  # this file's bound

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (.ci/run installs it)")


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    assert REDIS is not None
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: redis_answers(port), what="redis-server")
        yield port, proc
    finally:
        proc.kill()
        proc.wait(5)


MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  ports: [{{name: http, port: 80}}]
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
metadata:
  name: web
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/global-rate-limit: "10"
    nginx.ingress.kubernetes.io/global-rate-limit-window: "24h"
    pyngress.io/global-rate-limit-batch: "1"
spec:
  ingressClassName: pyngress
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
"""


def get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@needs_redis
def test_two_processes_share_one_global_limit(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Pod(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    pod = ThreadingHTTPServer(("127.0.0.1", 0), Pod)
    Thread(target=pod.serve_forever, daemon=True).start()
    (tmp_path / "app.yaml").write_text(MANIFESTS.format(port=pod.server_address[1]))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with redis_server() as (redis_port, _):
            ports = [free_port(), free_port()]
            for port in ports:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path), "--address", "127.0.0.1",
                     "--http-port", str(port), "--https-port", "0",
                     "--redis-url", f"redis://127.0.0.1:{redis_port}/0"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for port in ports:
                wait_for(lambda port=port: _listening(port), what=f"pyngress on {port}")  # type: ignore[misc]
            statuses = [get(ports[i % 2]) for i in range(24)]
            assert statuses.count(200) == 10, statuses
            assert statuses.count(429) == 14, statuses
            assert 200 in statuses[0::2] and 200 in statuses[1::2]  # both processes admitted some
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            _, err = proc.communicate(timeout=10)
            assert b"Traceback" not in err, err.decode()
        pod.shutdown()
        pod.server_close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def global_flow(limit: int, batch: int = 1) -> FlowSpec:
    return FlowSpec("default/site", global_limit=GlobalLimitSpec(limit, 86400.0, "$http_x_client", (), batch))


@contextlib.asynccontextmanager
async def proxy_with_redis(redis_url: str, flow: FlowSpec, settings: ProxySettings | None = None):  # type: ignore[no-untyped-def]
    backend = await EchoBackend.start()
    routes = [dataclasses.replace(route(service("echo", [backend])), flow=flow)]
    server = ProxyServer(snapshot(routes, settings=settings), rng=random.Random(0))
    server.flow.configure(redis_url=redis_url, redis_timeout=0.3)
    try:
        yield server, await server.listen("127.0.0.1", 0), backend
    finally:
        await server.drain(1.0)
        await backend.close()


async def statuses(port: int, client: str, n: int) -> list[int]:
    async with await RawClient.connect(port) as c:
        return [(await c.request("GET", "/", [("X-Client", client)])).status for _ in range(n)]


@needs_redis
@async_test
async def test_redis_killed_mid_test_fails_open_with_a_counter() -> None:
    with redis_server() as (redis_port, proc):
        async with proxy_with_redis(f"redis://127.0.0.1:{redis_port}/0", global_flow(3, batch=2)) as (
                server, port, backend):
            assert await statuses(port, "a", 5) == [200, 200, 200, 429, 429]
            limiter = server.flow.global_limiter
            assert limiter is not None and limiter.failures == 0 and limiter.round_trips == 2
            proc.kill()
            proc.wait(5)
            assert await statuses(port, "b", 4) == [200] * 4  # a new key: Redis is asked, and fails open
            assert limiter.failures >= 1
            assert await statuses(port, "a", 1) == [429]  # what Redis said about "a" still holds locally
            assert len(backend.requests) == 3 + 4


@needs_redis
@async_test
async def test_redis_down_fails_closed_when_configured() -> None:
    with redis_server() as (redis_port, proc):
        proc.kill()
        proc.wait(5)
        settings = ProxySettings(global_rate_limit_fail_closed=True)
        async with proxy_with_redis(f"redis://127.0.0.1:{redis_port}/0", global_flow(100), settings) as (
                server, port, backend):
            assert await statuses(port, "a", 2) == [503, 503]
            assert backend.requests == []
            assert server.flow.global_limiter is not None and server.flow.global_limiter.failures >= 2


@needs_redis
@async_test
async def test_batches_spare_round_trips_and_ignored_cidrs_are_not_counted() -> None:
    with redis_server() as (redis_port, _):
        flow = dataclasses.replace(global_flow(20, batch=5))
        async with proxy_with_redis(f"redis://127.0.0.1:{redis_port}/0", flow) as (server, port, _backend):
            got = await statuses(port, "a", 25)
            assert got == [200] * 20 + [429] * 5
            limiter = server.flow.global_limiter
            assert limiter is not None and limiter.round_trips == 5  # 4 batches of 5, one that found none left
        ignored = FlowSpec("default/site", global_limit=GlobalLimitSpec(1, 86400.0, "$http_x_client",
                                                                         ("127.0.0.0/8",), 1))
        async with proxy_with_redis(f"redis://127.0.0.1:{redis_port}/0", ignored) as (server, port, _backend):
            assert await statuses(port, "z", 3) == [200] * 3
            assert server.flow.global_limiter is not None and server.flow.global_limiter.round_trips == 0


@needs_redis
@async_test
async def test_concurrent_requests_of_one_key_share_reservations() -> None:
    with redis_server() as (redis_port, _):
        async with proxy_with_redis(f"redis://127.0.0.1:{redis_port}/0", global_flow(100, batch=5)) as (
                server, port, backend):
            clients = [await RawClient.connect(port) for _ in range(10)]
            try:
                for c in clients:  # all ten heads are in before the first reservation can return
                    await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Client: same\r\n\r\n")
                got = [(await c.response()).status for c in clients]
            finally:
                for c in clients:
                    await c.close()
            assert got == [200] * 10
            limiter = server.flow.global_limiter
            assert limiter is not None and limiter.round_trips <= 4  # not one per request
            assert len(backend.requests) == 10
