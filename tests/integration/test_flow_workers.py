"""`pyngress run --workers 2`: a rate limit is the configured one across workers (shared buckets), not twice
it. Connections are fresh per request, so the kernel spreads them over both workers."""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.integration.processes import free_port, wait_for

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
    nginx.ingress.kubernetes.io/limit-rpm: "1"
    nginx.ingress.kubernetes.io/limit-burst-multiplier: "5"
spec:
  ingressClassName: pyngress
  rules:
  - host: limited.test
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: free, namespace: shop}}
spec:
  ingressClassName: pyngress
  rules:
  - host: free.test
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}]
"""


class Pod(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    request_ids: list[str] = []

    def do_GET(self) -> None:
        Pod.request_ids.append(self.headers.get("X-Request-ID", ""))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def get(port: int, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def test_two_workers_enforce_one_rate_limit(tmp_path: Path) -> None:
    pod = ThreadingHTTPServer(("127.0.0.1", 0), Pod)
    threading.Thread(target=pod.serve_forever, daemon=True).start()
    (tmp_path / "app.yaml").write_text(MANIFESTS.format(port=pod.server_address[1]))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path), "--address",
                             "127.0.0.1", "--http-port", str(port), "--https-port", "0", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: get(port, "free.test") == 200)
        # both workers are up and serving: their request ids have different random prefixes
        wait_for(lambda: get(port, "free.test") == 200 and len({rid[:16] for rid in Pod.request_ids}) == 2)
        statuses = [get(port, "limited.test") for _ in range(15)]
        assert statuses.count(200) == 5, statuses  # the burst, once (divided per worker it would be 3 + 3)
        assert statuses.count(429) == 10
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        pod.shutdown()
        pod.server_close()
    assert b"Traceback" not in err, err.decode()
