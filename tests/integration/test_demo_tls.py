"""`pyngress demo --https-port`: the same pods over TLS, with the generated self-signed certificate."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading

TIMEOUT = 20.0


def test_demo_serves_https_with_the_fake_certificate() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-m", "pyngress", "demo", "--pods", "2", "--requests", "4",
                             "--http-port", "0", "--https-port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, encoding="utf-8", env=env)
    try:
        port = _https_port(proc)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="demo.local") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: demo.local\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            cert = tls.getpeercert(binary_form=True)
        assert data.startswith(b"HTTP/1.1 200") and b"X-Pod: demo-pod-" in data
        assert cert is not None and b"Kubernetes Ingress Controller Fake Certificate" in cert
        assert b"Strict-Transport-Security: max-age=31536000" in data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def _https_port(proc: subprocess.Popen[str]) -> int:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    while line := lines.get(timeout=TIMEOUT):
        seen.append(line)
        if match := re.search(r"and on https://127\.0\.0\.1:(\d+) — try: curl -k", line):
            return int(match.group(1))
    raise AssertionError("demo exited before serving https:\n" + "".join(seen))
