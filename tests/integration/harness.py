"""Shared helpers for the proxy integration tests: real sockets on 127.0.0.1, port 0, everything in-process.

- `async_test`: turns `async def test_x()` into a sync test run once on asyncio and once on uvloop, and fails
  the test if it leaves tasks behind.
- `EchoBackend`: a tiny HTTP/1.1 server that records every request exactly as the proxy sent it (raw head,
  parsed headers, body) and answers by path. Besides the echo it knows the fault paths the proxy must survive:
  /status/<code>, /delay/<s>, /bytes/<n>, /chunked/<n>, /close, /abort/<n>, /chunked-abort/<n>, /garbage,
  /overflow/<n>, /stall, /early-hints, /hop-response, /head-with-body. It also counts connections and raw
  bytes, so a test can assert that a refused request never reached it.
- `service`, `route`, `snapshot`: a Snapshot built by hand from the model dataclasses.
- `running_proxy`, `stack`: a ProxyServer listening on a free port, drained on exit.
- `RawClient`: sends exact bytes, reads one response (head, de-chunked body, whether it was complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest
import uvloop

from pyngress.model import Backend, Endpoint, PathType, ProxySettings, Route, Snapshot
from pyngress.runtime.server import ProxyServer

TIMEOUT = 5.0  # upper bound for any single read in a test: a hang fails fast instead of waiting for pytest-timeout
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# -- running async tests ---------------------------------------------------------------------------------


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run the coroutine test on each event loop (parameter `loop_impl`), then check for leaked tasks."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, loop_impl: str, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop_impl]) as runner:
            runner.run(_checked(fn(*args, **kwargs)))

    params = [*sig.parameters.values(), inspect.Parameter("loop_impl", inspect.Parameter.KEYWORD_ONLY)]
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # pytest must see the new signature, not the coroutine's
    return pytest.mark.parametrize("loop_impl", list(LOOPS))(wrapper)  # type: ignore[no-any-return]


async def _checked(coro: Awaitable[None]) -> None:
    await coro
    for _ in range(3):  # let close callbacks scheduled by the test's last statements run
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks left running: {leaked}"


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll a condition the test cannot await directly (state inside the proxy); bounded in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# -- the backend ------------------------------------------------------------------------------------------


@dataclass
class Received:
    """One request as the backend read it off the wire."""

    conn: int
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking body bytes of `size` length."""
    block = hashlib.sha256(b"pyngress").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EchoBackend:
    def __init__(self, name: str, *, close_on_second_request: bool = False, chunk_size: int = 65536) -> None:
        self.name = name
        self.close_on_second_request = close_on_second_request  # a keep-alive connection that died while idle
        self.chunk_size = chunk_size
        self.connections = 0
        self.bytes_received = 0
        self.requests: list[Received] = []
        self.arrived = asyncio.Condition()
        self.sent_body_bytes = 0  # for /bytes and /chunked: body bytes the proxy has taken from us so far
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, name: str = "pod-0", **kwargs: Any) -> EchoBackend:
        self = cls(name, **kwargs)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, name=self.name)

    async def wait_requests(self, count: int, timeout: float = TIMEOUT) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.requests) >= count), timeout)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()  # handlers waiting on something else than their socket (/stall, /delay)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.connections += 1
        conn, served = self.connections, 0
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    self.bytes_received += len(exc.partial)
                    return
                self.bytes_received += len(head)
                if served and self.close_on_second_request:
                    writer.transport.abort()
                    return
                req = _parse_head(conn, head)
                req.body = await self._read_body(reader, req)
                async with self.arrived:
                    self.requests.append(req)
                    self.arrived.notify_all()
                served += 1
                if not await self._respond(req, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:  # close() cancels handlers that wait on something else than the socket
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_body(self, reader: asyncio.StreamReader, req: Received) -> bytes:
        te, cl = req.header("transfer-encoding"), req.header("content-length")
        if te is not None and te.lower().endswith("chunked"):
            body = bytearray()
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0], 16)
                self.bytes_received += len(line) + size + 2
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        if cl is not None and int(cl) > 0:
            body = await reader.readexactly(int(cl))
            self.bytes_received += len(body)
            return body
        return b""

    async def _respond(self, req: Received, writer: asyncio.StreamWriter) -> bool:
        """Answer `req`; False closes the connection."""
        parts = req.path.strip("/").split("/")
        what, arg = parts[0], parts[1] if len(parts) > 1 else ""
        handler = getattr(self, "_path_" + what.replace("-", "_"), None)
        if handler is not None:
            return await handler(req, writer, arg)  # type: ignore[no-any-return]
        return await self._echo(req, writer)

    async def _echo(self, req: Received, writer: asyncio.StreamWriter, status: int = 200,
                    extra: bytes = b"") -> bool:
        body = json.dumps({
            "pod": self.name, "method": req.method, "path": req.target, "version": req.version,
            "host": req.header("host"), "headers": {n.lower(): v for n, v in req.headers},
            "body_bytes": len(req.body), "body_sha256": sha256(req.body),
        }).encode()
        writer.write(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                     % (status, len(body), extra) + (b"" if req.method == "HEAD" else body))
        await writer.drain()
        return True

    async def _path_status(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        status = int(arg)
        if status in (204, 304):
            writer.write(b"HTTP/1.1 %d X\r\nX-Pod: %s\r\n\r\n" % (status, self.name.encode()))
            await writer.drain()
            return True
        return await self._echo(req, writer, status)

    async def _path_delay(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        await asyncio.sleep(float(arg))
        return await self._echo(req, writer)

    async def _path_bytes(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        data = pattern(int(arg))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Body-Sha256: %s\r\n\r\n"
                     % (len(data), sha256(data).encode()))
        if req.method != "HEAD":
            await self._send_body(writer, data, chunked=False)
        return True

    async def _path_chunked(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        data = pattern(int(arg))
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Body-Sha256: %s\r\n\r\n"
                     % sha256(data).encode())
        await self._send_body(writer, data, chunked=True)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _path_trailers(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        """A chunked response whose last chunk carries trailer fields (X-Checksum)."""
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                     b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
        await writer.drain()
        return True

    async def _send_body(self, writer: asyncio.StreamWriter, data: bytes, *, chunked: bool) -> None:
        for i in range(0, len(data), self.chunk_size):
            piece = data[i : i + self.chunk_size]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            self.sent_body_bytes += len(piece)

    async def _path_close(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        await self._echo(req, writer, extra=b"Connection: close\r\n")
        return False

    async def _path_abort(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        n = int(arg)  # announce 2n bytes, send n, then reset
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (2 * n, pattern(n)))
        await writer.drain()
        writer.transport.abort()
        return False

    async def _path_chunked_abort(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")  # n bytes, no last chunk
        await self._send_body(writer, pattern(int(arg)), chunked=True)
        writer.transport.abort()
        return False

    async def _path_garbage(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        writer.write(b"HTTP/1.1 2x0 Nope\r\nContent-Length: 2\r\n\r\nno")
        await writer.drain()
        return False

    async def _path_overflow(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        data = pattern(int(arg))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sEXTRA-BYTES-AFTER-BODY" % (len(data), data))
        await writer.drain()
        return True

    async def _path_stall(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        await asyncio.Event().wait()  # until close() cancels us
        return False

    async def _path_early_hints(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        return await self._echo(req, writer)

    async def _path_hop_response(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        extra = b"Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-End-To-End: 1\r\n"
        return await self._echo(req, writer, extra=extra)

    async def _path_head_with_body(self, req: Received, writer: asyncio.StreamWriter, arg: str) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")  # even to HEAD: a broken backend
        await writer.drain()
        return True


def _parse_head(conn: int, head: bytes) -> Received:
    """Lenient on purpose: record whatever arrived, so that a test can judge it."""
    lines = head[:-4].split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    target, _, version = rest.rpartition(b" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return Received(conn, method.decode("latin-1"), target.decode("latin-1"), version.decode("latin-1"),
                    headers, head)


@contextlib.contextmanager
def refused_port() -> Any:
    """A port bound but not listening: connecting to it is refused (Linux answers with RST)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# -- building a snapshot by hand --------------------------------------------------------------------------


def service(name: str, endpoints: Sequence[Endpoint | EchoBackend], *, namespace: str = "default",
            port: str = "80") -> Backend:
    eps = tuple(e.endpoint if isinstance(e, EchoBackend) else e for e in endpoints)
    return Backend(key=f"{namespace}/{name}:{port}", namespace=namespace, service=name, port=port, endpoints=eps)


def route(backend: Backend, path: str = "/", *, host: str = "", path_type: PathType = PathType.PREFIX) -> Route:
    return Route(host, path, path_type, backend, ingress=f"{backend.namespace}/ing-{backend.service}")


def snapshot(routes: Sequence[Route] = (), *, default: Backend | None = None,
             settings: ProxySettings | None = None, version: int = 1) -> Snapshot:
    backends = {r.backend.key: r.backend for r in routes}
    if default is not None:
        backends[default.key] = default
    return Snapshot(version, routes=tuple(routes), default_backend=default, backends=MappingProxyType(backends),
                    settings=settings or ProxySettings())


# -- the proxy --------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    server: ProxyServer
    port: int

    async def client(self, **kwargs: Any) -> RawClient:
        return await RawClient.connect(self.port, **kwargs)

    async def get(self, target: str = "/", **kwargs: Any) -> Response:
        """One request on a fresh connection."""
        async with await self.client() as c:
            return await c.request("GET", target, **kwargs)


@contextlib.asynccontextmanager
async def running_proxy(snap: Snapshot, *, grace: float = 1.0) -> AsyncIterator[Proxy]:
    server = ProxyServer(snap, rng=random.Random(0))
    port = await server.listen("127.0.0.1", 0)
    try:
        yield Proxy(server, port)
    finally:
        if server._ticker is not None:  # not drained by the test itself
            await server.drain(grace)


@dataclass
class Stack:
    proxy: Proxy
    backends: list[EchoBackend]
    service: Backend

    @property
    def backend(self) -> EchoBackend:
        return self.backends[0]

    @property
    def requests(self) -> list[Received]:
        return [r for b in self.backends for r in b.requests]


@contextlib.asynccontextmanager
async def stack(pods: int = 1, *, settings: ProxySettings | None = None, max_body: int = 1 << 20,
                **backend_kwargs: Any) -> AsyncIterator[Stack]:
    """`pods` echo backends behind one Service, routed for every host and path. `max_body`: the route's
    proxy-body-size (1m by default, as a compiled route; 0: unlimited)."""
    async with contextlib.AsyncExitStack() as exits:
        backends = []
        for i in range(pods):
            b = await EchoBackend.start(f"pod-{i}", **backend_kwargs)
            exits.push_async_callback(b.close)
            backends.append(b)
        svc = service("echo", backends)
        routes = [dataclasses.replace(route(svc), max_body=max_body)]
        proxy = await exits.enter_async_context(running_proxy(snapshot(routes, settings=settings)))
        yield Stack(proxy, backends, svc)


# -- the client -------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes = b""
    complete: bool = True  # False: the connection closed before the announced body was all there
    chunked: bool = False

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def has(self, name: str) -> bool:
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(method: str, target: str, headers: Sequence[tuple[str, str]] | None = None,
                  body: bytes = b"", *, version: str = "HTTP/1.1", host: str | None = "test.local") -> bytes:
    """A request as bytes. Host comes first unless `host` is None; Content-Length is added for a body
    unless the headers already frame it."""
    hs = list(headers or ())
    if host is not None and not any(n.lower() == "host" for n, _ in hs):
        hs.insert(0, ("Host", host))
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in hs) + "\r\n"
    return head.encode("latin-1") + body


def chunked(data: bytes, size: int = 4096) -> bytes:
    pieces = [b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(pieces) + b"0\r\n\r\n"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str, target: str = "/", headers: Sequence[tuple[str, str]] | None = None,
                      body: bytes = b"", **kwargs: Any) -> Response:
        await self.send(build_request(method, target, headers, body, **kwargs))
        return await self.response(method)

    async def response(self, method: str = "GET", *, timeout: float = TIMEOUT,
                       informational: bool = False) -> Response:
        """The next response; 1xx responses are skipped unless `informational`."""
        while True:
            resp = await asyncio.wait_for(self._read(method), timeout)
            if informational or resp.status >= 200:
                return resp

    async def _read(self, method: str) -> Response:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, reason = ([*lines[0].split(" ", 2), ""])[:3]
        headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        resp = Response(int(status), reason, version, headers, raw)
        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        te, cl = resp.header("transfer-encoding"), resp.header("content-length")
        if te is not None:
            resp.chunked = True
            resp.body, resp.complete = await self._read_chunked()
        elif cl is not None:
            try:
                resp.body = await self.reader.readexactly(int(cl))
            except asyncio.IncompleteReadError as exc:
                resp.body, resp.complete = exc.partial, False
        else:
            resp.body = await self.read_to_eof()
        return resp

    async def _read_chunked(self) -> tuple[bytes, bool]:
        body = bytearray()
        try:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return bytes(body), True
                body += await self.reader.readexactly(size)
                assert await self.reader.readexactly(2) == b"\r\n"
        except asyncio.IncompleteReadError as exc:
            return bytes(body + exc.partial), False

    async def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionResetError:
            return b""

    async def at_eof(self, timeout: float = TIMEOUT) -> bool:
        """True when the peer closed the connection (or reset it) with no further bytes."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionResetError:
            return True
        return rest == b""
