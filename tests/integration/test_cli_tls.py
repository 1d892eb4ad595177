"""`pyngress check` reports bad Secrets; `pyngress run` serves HTTPS by SNI and redirects plain HTTP to it."""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from tests.integration import processes
from tests.integration.processes import free_port
from tls_harness import CA, app, der, secret

wait_for = partial(processes.wait_for, timeout=20.0, retry_on=(OSError,))  # OSError: not listening yet

LEAF = CA.issue_cert("shop.example.com")


def pyngress(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyngress", *args]


def test_check_names_the_invalid_secret_and_shows_the_tls_table(tmp_path: Path) -> None:
    other = CA.issue_cert("other.example.com")
    docs = [secret("shop-tls", LEAF, key=other.private_key_pem.bytes()),
            *app("web", ["shop.example.com"], 9001, tls=[(["shop.example.com"], "shop-tls")])]
    (tmp_path / "tls.yaml").write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(pyngress("check", "-f", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout
    line = next(li for li in result.stdout.splitlines() if "Secret default/shop-tls" in li)
    assert line.strip().startswith("error:") and "data.tls.key" in line
    assert "shop.example.com gets the default certificate" in line
    assert any(li.startswith("shop.example.com") and "(default)" in li for li in result.stdout.splitlines())


def test_check_accepts_an_ingress_nginx_configmap_with_legacy_tls_versions(tmp_path: Path) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pyngress", "namespace": "default"},
                 "data": {"ssl-protocols": "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3", "ssl-ciphers": "HIGH:!aNULL:!MD5"}}
    docs = [configmap, secret("shop-tls", LEAF),
            *app("web", ["shop.example.com"], 9001, tls=[(["shop.example.com"], "shop-tls")])]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(pyngress("check", "-f", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    [line] = [li for li in result.stdout.splitlines() if "ssl-protocols" in li]
    assert line.strip().startswith("warning:") and "data.ssl-protocols" in line and "TLSv1 TLSv1.1 ignored" in line
    assert "ssl-ciphers" not in result.stdout


class _Pod(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = (self.headers.get("X-Forwarded-Proto") or "").encode()
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
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def https_get(port: int) -> tuple[int, bytes, bytes]:
    """GET /x over TLS with SNI shop.example.com: (status, body, the server's certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), 5) as raw, \
            ctx.wrap_socket(raw, server_hostname="shop.example.com") as tls:
        tls.sendall(b"GET /x HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        cert = tls.getpeercert(binary_form=True)
    head, _, body = data.partition(b"\r\n\r\n")
    assert cert is not None
    return int(head.split()[1]), body, cert


def test_run_serves_https_by_sni_and_redirects_plain_http(tmp_path: Path, backend: int) -> None:
    expired = CA.issue_cert("old.example.com", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                            not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
    docs = [secret("shop-tls", LEAF), secret("old-tls", expired),
            *app("web", ["shop.example.com"], backend, tls=[(["shop.example.com"], "shop-tls")]),
            *app("old", ["old.example.com"], backend, tls=[(["old.example.com"], "old-tls")])]
    (tmp_path / "tls.yaml").write_text(yaml.safe_dump_all(docs))
    http_port, https_port = free_port(), free_port()
    proc = subprocess.Popen(pyngress("run", "-f", str(tmp_path), "--http-port", str(http_port), "--https-port",
                                     str(https_port), "--address", "127.0.0.1", "--shutdown-grace", "2",
                                     "--shutdown-grace-period", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: https_get(https_port)[0] == 200)
        status, body, cert = https_get(https_port)
        assert (status, body, cert) == (200, b"https", der(LEAF))
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        plain.request("GET", "/cart?id=1", headers={"Host": "shop.example.com"})
        resp = plain.getresponse()
        assert resp.status == 308
        assert resp.getheader("Location") == f"https://shop.example.com:{https_port}/cart?id=1"
        plain.close()
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"serving https on 127.0.0.1:{https_port}" in output
    # the expired Secret is logged, naming it; the other host was served with its own certificate above
    assert "WARNING" in output and "Secret default/old-tls: data.tls.crt: the certificate expired on 2021-01-01" \
        in output


def test_run_with_two_workers_resumes_tls_sessions_on_either_worker(tmp_path: Path, backend: int) -> None:
    """Ticket keys are made once per start and shared by the workers (tls_contexts.TICKET_KEYS): a client
    resumes whichever worker SO_REUSEPORT gives its next connection to. With keys per worker about half of
    these reconnections would be full handshakes."""
    docs = [secret("shop-tls", LEAF),
            *app("web", ["shop.example.com"], backend, tls=[(["shop.example.com"], "shop-tls")])]
    (tmp_path / "tls.yaml").write_text(yaml.safe_dump_all(docs))
    https_port = free_port()
    proc = subprocess.Popen(pyngress("run", "-f", str(tmp_path), "--http-port", str(free_port()), "--https-port",
                                     str(https_port), "--address", "127.0.0.1", "--workers", "2",
                                     "--shutdown-grace", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        wait_for(lambda: https_get(https_port)[0] == 200)
        session, reused = None, []
        for _ in range(12):
            with socket.create_connection(("127.0.0.1", https_port), 5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="shop.example.com", session=session) as tls:
                tls.sendall(b"GET /x HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass
                reused.append(tls.session_reused)
                session = tls.session  # TLS 1.3: the ticket arrived with the response
        assert reused[1:] == [True] * 11, reused
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
