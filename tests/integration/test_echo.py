"""The echo pod (`pyngress.runtime.echo`) against a raw asyncio client on 127.0.0.1, port 0, on asyncio and uvloop.

The client parses responses by hand (not with httptools, which the pod itself uses), so framing mistakes in
the pod cannot cancel out against the same mistakes in the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from harness import async_test

from pyngress.runtime.echo import EchoServer, pattern, start_echo

TIMEOUT = 5.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def get(self, target: str, extra: str = "") -> Response:
        await self.send(f"GET {target} HTTP/1.1\r\nHost: pod.test\r\n{extra}\r\n".encode())
        return await self.response()

    async def response(self, method: str = "GET") -> Response:
        return await asyncio.wait_for(self._read(method), TIMEOUT)

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), TIMEOUT) == b""

    async def _read(self, method: str) -> Response:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
        status = int(head[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        if method == "HEAD" or status in (204, 304):
            return Response(status, headers, b"")
        if headers.get("transfer-encoding") == "chunked":
            return await self._read_chunked(status, headers)
        return Response(status, headers, await self.reader.readexactly(int(headers["content-length"])))

    async def _read_chunked(self, status: int, headers: dict[str, str]) -> Response:
        body, chunks = bytearray(), 0
        while size := int(await self.reader.readuntil(b"\r\n"), 16):
            body += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n"
            chunks += 1
        assert await self.reader.readuntil(b"\r\n") == b"\r\n"
        return Response(status, headers, bytes(body), chunks)


@asynccontextmanager
async def pod_and_client(**kwargs: Any) -> AsyncIterator[tuple[EchoServer, Client]]:
    pod = await start_echo("pod-a", **kwargs)
    reader, writer = await asyncio.open_connection(pod.host, pod.port)
    try:
        yield pod, Client(reader, writer)
    finally:
        writer.close()
        await pod.close()


@async_test
async def test_echo_describes_the_request_as_received() -> None:
    async with pod_and_client() as (pod, client):
        resp = await client.get("/some/path?q=1&r=%20", "X-Multi: a\r\nx-multi: b\r\nUser-Agent: t\r\n")
    assert resp.status == 200
    assert resp.headers["x-pod"] == "pod-a"
    assert resp.headers["content-type"] == "application/json"
    assert int(resp.headers["content-length"]) == len(resp.body)
    doc = resp.json()
    assert doc["pod"] == "pod-a" and doc["method"] == "GET" and doc["path"] == "/some/path?q=1&r=%20"
    assert doc["host"] == "pod.test"
    assert doc["headers"] == {"host": "pod.test", "x-multi": "a, b", "user-agent": "t"}
    assert doc["body_bytes"] == 0 and doc["body_sha256"] == hashlib.sha256(b"").hexdigest()
    assert pod.url == f"http://127.0.0.1:{pod.port}" and pod.requests == 1 and pod.connections == 1


@async_test
async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with pod_and_client() as (pod, client):
        for i in range(3):
            assert (await client.get(f"/{i}")).json()["path"] == f"/{i}"
        assert "connection" not in (await client.get("/again")).headers
    assert pod.connections == 1 and pod.requests == 4


@async_test
async def test_connection_close_from_client_is_honoured() -> None:
    async with pod_and_client() as (_, client):
        resp = await client.get("/", "Connection: close\r\n")
        assert resp.headers["connection"] == "close"
        assert await client.at_eof()


@async_test
async def test_http10_closes_unless_keep_alive_is_asked_for() -> None:
    async with pod_and_client() as (_, client):
        await client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await client.response()).headers["connection"] == "keep-alive"
        await client.send(b"GET /b HTTP/1.0\r\n\r\n")
        resp = await client.response()
        assert resp.json()["path"] == "/b" and resp.headers["connection"] == "close"
        assert await client.at_eof()


@async_test
async def test_content_length_and_chunked_bodies_are_counted_and_hashed() -> None:
    body = pattern(100_000)
    async with pod_and_client() as (_, client):
        await client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        first = (await client.response()).json()
        await client.send(b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        second = (await client.response()).json()
    assert (first["method"], first["body_bytes"]) == ("POST", len(body))
    assert first["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert (second["method"], second["body_bytes"]) == ("PUT", 11)
    assert second["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()


@async_test
async def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slow() -> None:
    async with pod_and_client() as (pod, client):
        await client.send(b"GET /delay/0.2 HTTP/1.1\r\nHost: h\r\n\r\nGET /fast HTTP/1.1\r\nHost: h\r\n\r\n"
                          b"GET /status/204 HTTP/1.1\r\nHost: h\r\n\r\nGET /last HTTP/1.1\r\nHost: h\r\n\r\n")
        paths = [(await client.response()).json()["path"] for _ in range(2)]
        assert (await client.response()).status == 204
        paths.append((await client.response()).json()["path"])
    assert paths == ["/delay/0.2", "/fast", "/last"]
    assert pod.connections == 1 and pod.requests == 4


@async_test
async def test_status_path_answers_that_status_with_correct_framing() -> None:
    async with pod_and_client() as (_, client):
        missing = await client.get("/status/404")
        assert missing.status == 404 and missing.json()["path"] == "/status/404"
        for code in (204, 304):
            resp = await client.get(f"/status/{code}")
            assert resp.status == code
            assert "content-length" not in resp.headers and "transfer-encoding" not in resp.headers
        assert (await client.get("/after")).json()["path"] == "/after"  # no stray body bytes in between


@async_test
async def test_bad_arguments_get_400_on_a_connection_that_stays_open() -> None:
    async with pod_and_client() as (_, client):
        for target in ("/status/abc", "/status/99", "/bytes/-1", f"/bytes/{64 * 1024 * 1024 + 1}", "/delay/x"):
            assert (await client.get(target)).status == 400, target
        assert (await client.get("/ok")).status == 200


@async_test
async def test_delay_path_and_pod_delay_hold_the_response() -> None:
    async with pod_and_client(delay=0.1) as (_, client):
        start = time.monotonic()
        await client.get("/delay/0.1")
        assert time.monotonic() - start >= 0.19  # uvloop rounds timers to whole milliseconds


@async_test
async def test_bytes_path_sends_the_pattern_and_waits_for_a_slow_reader() -> None:
    size = 16 * 1024 * 1024
    async with pod_and_client() as (pod, client):
        await client.send(b"GET /bytes/%d HTTP/1.1\r\nHost: h\r\n\r\n" % size)
        (conn,) = pod._open
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while conn.writable.is_set():  # bounded poll: the pod must stop writing while we do not read
            assert asyncio.get_running_loop().time() < deadline, "pod never paused writing"
            await asyncio.sleep(0.005)
        assert conn.transport is not None and conn.transport.get_write_buffer_size() < 1024 * 1024
        resp = await client.response()
    assert resp.headers["content-type"] == "application/octet-stream"
    assert int(resp.headers["content-length"]) == size and resp.body == pattern(size)


@async_test
async def test_chunked_path_sends_several_chunks() -> None:
    async with pod_and_client() as (_, client):
        resp = await client.get("/chunked/100000")
        empty = await client.get("/chunked/0")
    assert resp.headers["transfer-encoding"] == "chunked" and "content-length" not in resp.headers
    assert resp.chunks >= 2 and resp.body == pattern(100_000)
    assert empty.body == b"" and empty.chunks == 0


@async_test
async def test_close_path_answers_then_closes() -> None:
    async with pod_and_client() as (_, client):
        resp = await client.get("/close")
        assert resp.headers["connection"] == "close" and resp.json()["path"] == "/close"
        assert await client.at_eof()


@async_test
async def test_abort_path_sends_half_the_announced_body_then_closes() -> None:
    async with pod_and_client() as (_, client):
        await client.send(b"GET /abort/1000 HTTP/1.1\r\nHost: h\r\n\r\n")
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        rest = await asyncio.wait_for(client.reader.read(), TIMEOUT)
    assert b"Content-Length: 2000\r\n" in head
    assert rest == pattern(1000)


@async_test
async def test_head_gets_headers_only() -> None:
    async with pod_and_client() as (_, client):
        await client.send(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: h\r\n\r\n")
        resp = await client.response("HEAD")
        assert resp.headers["content-length"] == "5000"
        assert (await client.get("/next")).json()["path"] == "/next"


@async_test
async def test_malformed_request_gets_400_and_close_after_earlier_answers() -> None:
    async with pod_and_client() as (pod, client):
        await client.send(b"GET /fine HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        assert (await client.response()).json()["path"] == "/fine"
        bad = await client.response()
        assert bad.status == 400 and bad.headers["connection"] == "close"
        assert await client.at_eof()
    assert pod.requests == 1


@async_test
async def test_close_drops_open_connections() -> None:
    pod = await start_echo("pod-z")
    reader, writer = await asyncio.open_connection(pod.host, pod.port)
    client = Client(reader, writer)
    await client.send(b"GET /delay/30 HTTP/1.1\r\nHost: h\r\n\r\n")
    await pod.close()  # aborts: the client sees a reset (or EOF), not a hang
    with suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()
    assert pod.requests == 0
