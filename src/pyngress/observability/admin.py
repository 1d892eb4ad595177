"""The admin listener (default 127.0.0.1:10254, ingress-nginx's metrics port): health, metrics, status, dashboard.

    /healthz  200 while the process runs (liveness)
    /readyz   200 when a configuration is loaded, caches are synced (Kubernetes mode) and we are not draining;
              503 otherwise (readiness: take this replica out of the Service while it drains)
    /metrics  Prometheus text format (observability.prometheus)
    /status   JSON: configuration generation, routes, endpoints with health and traffic (observability.status)
    /config   the compiled configuration as JSON, secrets redacted
    /         the dashboard (one HTML file, no external resources)

A small server of our own on httptools rather than aiohttp: six GET routes, no bodies, no streaming; the
proxy already depends on httptools and asyncio, and another framework (with its own event-loop expectations
and ~20 transitive packages) is not worth that. It binds to loopback by default because /config and /status
describe the whole configuration; `--admin-address` widens it deliberately.

Where the data comes from is a `Provider`: the worker itself with `--workers 1`, or the parent gathering from
every worker over pipes (observability.workers) with more.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from typing import Any, Protocol, cast

import httptools

from pyngress.observability import prometheus, status
from pyngress.observability.export import State, merge

log = logging.getLogger("pyngress.admin")

DEFAULT_PORT = 10254
MAX_REQUEST = 16 * 1024


class Provider(Protocol):
    async def states(self) -> list[State]: ...
    async def config(self) -> Any: ...
    def alive(self) -> bool: ...


def dashboard_html() -> bytes:
    return resources.files("pyngress.observability").joinpath("dashboard.html").read_bytes()


class AdminApp:
    """The routes, independent of the socket: `await app.handle(path) -> (status, content type, body)`."""

    def __init__(self, provider: Provider, ingress_class: str = "pyngress") -> None:
        self.provider = provider
        self.ingress_class = ingress_class

    async def handle(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return (200, "text/plain", b"ok\n") if self.provider.alive() else (503, "text/plain", b"dead\n")
        if path == "/readyz":
            state = await self._state()
            ready = state is not None and state["ready"]
            return (200, "text/plain", b"ready\n") if ready else (503, "text/plain", b"not ready\n")
        if path == "/metrics":
            state = await self._state()
            if state is None:
                return 503, "text/plain", b"no worker answered\n"
            return 200, prometheus.CONTENT_TYPE, prometheus.render(state, self.ingress_class)
        if path == "/status":
            state = await self._state()
            if state is None:
                return 503, "text/plain", b"no worker answered\n"
            return 200, "application/json", _json(status.status_document(state))
        if path == "/config":
            return 200, "application/json", _json(await self.provider.config())
        if path in ("/", "/dashboard"):
            return 200, "text/html; charset=utf-8", dashboard_html()
        return 404, "text/plain", b"not found\n"

    async def _state(self) -> State | None:
        states = await self.provider.states()
        return merge(states) if states else None


def _json(doc: Any) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=False).encode() + b"\n"


class _AdminConnection(asyncio.Protocol):
    """One admin client: requests answered in order, keep-alive, GET/HEAD only, no bodies."""

    def __init__(self, app: AdminApp, open_set: set[_AdminConnection]) -> None:
        self.app = app
        self.open_set = open_set
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.size = 0
        self.pending: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.open_set.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.open_set.discard(self)
        if self.pending is not None:
            self.pending.cancel()

    def data_received(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_REQUEST or self.pending is not None:  # one request at a time: no pipelining here
            self._send(400, "text/plain", b"bad request\n", close=True)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, "text/plain", b"bad request\n", close=True)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        url, self.url, self.size = self.url, b"", 0
        if method not in (b"GET", b"HEAD"):
            self._send(405, "text/plain", b"method not allowed\n", close=not keep)
            return
        self.pending = asyncio.get_running_loop().create_task(self._answer(url, method == b"HEAD", keep))

    async def _answer(self, url: bytes, head: bool, keep: bool) -> None:
        try:
            code, ctype, body = await self.app.handle(url.decode("latin-1"))
        except Exception:  # a bug in a handler must not take the admin listener down
            log.exception("admin request %r failed", url)
            code, ctype, body = 500, "text/plain", b"internal error\n"
        self.pending = None
        self._send(code, ctype, b"" if head else body, close=not keep, length=len(body))

    def _send(self, code: int, ctype: str, body: bytes, *, close: bool, length: int | None = None) -> None:
        if self.transport is None:
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(code, "")
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: "
                f"{len(body) if length is None else length}\r\nCache-Control: no-store\r\n"
                f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n")
        self.transport.write(head.encode() + body)
        if close:
            self.transport.close()


class AdminServer:
    def __init__(self, app: AdminApp) -> None:
        self.app = app
        self._server: asyncio.base_events.Server | None = None
        self._open: set[_AdminConnection] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _AdminConnection(self.app, self._open), host, port,
                                                reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._open):
                if conn.pending is not None:
                    conn.pending.cancel()
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
