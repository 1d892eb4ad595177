"""Client connection lifetime: header and idle timeouts, keep-alive limits, HTTP/1.0."""

from __future__ import annotations

import time

from harness import async_test, build_request, sha256, stack

from pyngress.model import ProxySettings


@async_test
async def test_half_sent_head_gets_408_after_client_header_timeout_and_close() -> None:
    async with stack(settings=ProxySettings(client_header_timeout=0.3)) as s, await s.proxy.client() as c:
        started = time.monotonic()
        await c.send(b"GET /slow HTTP/1.1\r\nHost: test.local\r\nX-Half")
        resp = await c.response()
        assert resp.status == 408
        assert resp.header("Connection") == "close"
        assert 0.25 < time.monotonic() - started < 2.0
        assert await c.at_eof()
    assert s.backend.bytes_received == 0


@async_test
async def test_idle_keepalive_connection_is_closed_after_keep_alive_timeout() -> None:
    async with stack(settings=ProxySettings(keep_alive=0.3)) as s, await s.proxy.client() as c:
        assert (await c.request("GET", "/")).header("Connection") is None
        started = time.monotonic()
        assert await c.at_eof(timeout=3.0)
        assert 0.25 < time.monotonic() - started < 2.0


@async_test
async def test_keep_alive_requests_limit_closes_after_third_response() -> None:
    async with stack(settings=ProxySettings(keep_alive_requests=3)) as s, await s.proxy.client() as c:
        first, second = await c.request("GET", "/1"), await c.request("GET", "/2")
        assert first.header("Connection") is None and second.header("Connection") is None
        third = await c.request("GET", "/3")
        assert third.status == 200
        assert third.header("Connection") == "close"
        assert await c.at_eof()


@async_test
async def test_http10_client_without_keepalive_gets_connection_close() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/old", version="HTTP/1.0", host=None)
        assert resp.status == 200
        assert resp.header("Connection") == "close"
        assert await c.at_eof()


@async_test
async def test_http10_client_with_keepalive_stays_open() -> None:
    async with stack() as s, await s.proxy.client() as c:
        for i in range(3):
            resp = await c.request("GET", f"/old/{i}", [("Connection", "keep-alive")], version="HTTP/1.0")
            assert resp.status == 200
            assert resp.header("Connection") == "keep-alive"
    assert [r.version for r in s.backend.requests] == ["HTTP/1.1"] * 3  # we speak 1.1 upstream


@async_test
async def test_chunked_response_to_http10_client_is_dechunked_and_connection_closes() -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/chunked/300000", [("Connection", "keep-alive")], version="HTTP/1.0"))
        resp = await c.response()
        assert resp.status == 200
        assert not resp.has("Transfer-Encoding")
        assert resp.header("Connection") == "close"
        assert len(resp.body) == 300000  # read until the close
        assert sha256(resp.body) == resp.header("X-Body-Sha256")


@async_test
async def test_client_half_close_after_request_still_gets_response() -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/delay/0.05"))
        c.writer.write_eof()
        resp = await c.response()
        assert resp.status == 200
        assert await c.at_eof()


@async_test
async def test_keep_alive_zero_answers_one_request_per_connection() -> None:
    async with stack(settings=ProxySettings(keep_alive=0)) as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/")
        assert resp.header("Connection") == "close"
        assert await c.read_to_eof() == b""
