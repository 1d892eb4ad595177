"""`pyngress run --workers 2`: limit-connections is the configured count across workers (counts in shared
memory), not divided per worker, and a worker killed while holding slots does not keep them after its restart.

Every request goes to a pod that holds it until the test lets go, so the requests in progress are exactly
those the pod holds. Each request opens its own connection, so the kernel spreads them over both workers; the
request id's prefix (random per worker) says which worker forwarded each held one."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.integration.processes import children, free_port, wait_for

LIMIT = 3
EXTRA = 9
REFUSED = b"HTTP/1.1 429"

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
  name: limited
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/limit-connections: "{limit}"
spec:
  ingressClassName: pyngress
  rules:
  - host: limited.test
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}]
"""


class Pod(BaseHTTPRequestHandler):
    """Holds every request until `gate` opens; `held` lists the request ids it is holding."""

    protocol_version = "HTTP/1.1"
    gate = threading.Event()
    lock = threading.Lock()
    held: list[str] = []
    worker_ids: set[str] = set()

    def do_GET(self) -> None:
        rid = self.headers.get("X-Request-ID", "")
        with Pod.lock:
            Pod.held.append(rid)
            Pod.worker_ids.add(rid[:16])
        Pod.gate.wait(20)
        with Pod.lock:
            Pod.held.remove(rid)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def open_requests(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: limited.test\r\n\r\n")
        socks.append(s)
    return socks


def statuses(socks: list[socket.socket], answered: dict[socket.socket, bytes], timeout: float) -> None:
    """Read what arrives within `timeout` into `answered`: each whole response (the pod's 200 ends in "ok",
    after which its slot has been given back: both happen in one turn of the worker's loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [s for s in socks if not complete(answered.get(s))]
        if not waiting:
            return
        ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return
        for s in ready:
            answered[s] = answered.get(s, b"") + (s.recv(65536) or b"<closed>")


def complete(response: bytes | None) -> bool:
    return response is not None and (response.endswith((b"ok", b"<closed>")) or response.startswith(REFUSED))


def decided(socks: list[socket.socket], answered: dict[socket.socket, bytes], sent: int) -> bool:
    """Every request sent is either held by the pod or answered (refused) by pyngress."""
    statuses(socks, answered, 0.02)
    return len(answered) + len(Pod.held) >= sent


def round_trip(port: int) -> tuple[int, int, set[str]]:
    """LIMIT + EXTRA requests, each sent once the previous one is held or refused (so that no two workers
    decide at the same instant, see policy.shared_connections): how many the pod holds, how many got 429,
    which workers sent the held ones."""
    Pod.gate.clear()
    with Pod.lock:
        Pod.worker_ids.clear()
    socks: list[socket.socket] = []
    answered: dict[socket.socket, bytes] = {}
    try:
        for sent in range(1, LIMIT + EXTRA + 1):
            socks += open_requests(port, 1)
            wait_for(partial(decided, socks, answered, sent), what="the request held or refused",
                     state=lambda: (len(Pod.held), len(answered)))
        statuses(socks, answered, 0.3)  # anything more that would come (it must not)
        held, refused = len(Pod.held), sum(a.startswith(REFUSED) for a in answered.values())
        with Pod.lock:
            workers = set(Pod.worker_ids)
    finally:
        Pod.gate.set()
        statuses(socks, answered, 10.0)
        for s in socks:
            s.close()
    # the held ones are answered now: their slots were given back before their responses ended
    assert sum(a.startswith(b"HTTP/1.1 200") for a in answered.values()) == held
    return held, refused, workers


def start(tmp_path: Path) -> tuple[ThreadingHTTPServer, subprocess.Popen[bytes], int]:
    pod = ThreadingHTTPServer(("127.0.0.1", 0), Pod)
    pod.daemon_threads = True
    threading.Thread(target=pod.serve_forever, daemon=True).start()
    (tmp_path / "app.yaml").write_text(MANIFESTS.format(port=pod.server_address[1], limit=LIMIT))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path), "--address",
                             "127.0.0.1", "--http-port", str(port), "--https-port", "0", "--workers", "2",
                             "--shutdown-grace-period", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return pod, proc, port


def serving(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_limit_connections_is_exact_across_two_workers(tmp_path: Path) -> None:
    pod, proc, port = start(tmp_path)
    try:
        wait_for(lambda: serving(port) and len(children(proc.pid)) == 2, what="two workers")
        seen: set[str] = set()
        for _ in range(6):  # until the held requests came through both workers (3 of 4 rounds do)
            held, refused, workers = round_trip(port)
            assert (held, refused) == (LIMIT, EXTRA)  # divided per worker it would be 2 + 2 held
            seen |= workers
            if len(workers) == 2:
                break
        assert len(seen) == 2, "the held requests never came through both workers"

        # kill -9 both workers while they hold every slot: their successors must not inherit the counts
        Pod.gate.clear()
        socks = open_requests(port, LIMIT)
        wait_for(lambda: len(Pod.held) == LIMIT, what="held requests")
        old = children(proc.pid)
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        for s in socks:
            s.close()
        Pod.gate.set()
        wait_for(lambda: not Pod.held, what="the pod to finish")
        wait_for(lambda: len(set(children(proc.pid)) - set(old)) == 2 and serving(port), what="new workers")
        held, refused, _ = round_trip(port)
        assert (held, refused) == (LIMIT, EXTRA)
    finally:
        Pod.gate.set()
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        pod.shutdown()
        pod.server_close()
    assert b"Traceback" not in err, err.decode()
