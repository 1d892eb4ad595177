"""Bodies both ways, flow control, Expect: 100-continue, bodiless responses, 1xx, pipelining."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import async_test, build_request, chunked, pattern, sha256, stack, wait_until

MB = 1 << 20


@async_test
async def test_content_length_request_body_of_1mb_arrives_intact() -> None:
    body = pattern(MB)
    async with stack() as s, await s.proxy.client() as c:
        echo = (await c.request("POST", "/upload", body=body)).json()
        assert (echo["body_bytes"], echo["body_sha256"]) == (MB, sha256(body))
        assert s.backend.requests[0].header("content-length") == str(MB)


@async_test
async def test_chunked_request_body_of_1mb_in_many_chunks_arrives_intact() -> None:
    body = pattern(MB)
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + chunked(body, 3001))
        echo = (await c.response()).json()
        assert (echo["body_bytes"], echo["body_sha256"]) == (MB, sha256(body))
        again = await c.request("GET", "/after")  # the connection is still in step
        assert again.json()["path"] == "/after"


@pytest.mark.parametrize("size", [1 * MB, 8 * MB])
@pytest.mark.parametrize("kind", ["bytes", "chunked"])
@async_test
async def test_large_response_body_arrives_intact(kind: str, size: int) -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", f"/{kind}/{size}")
        assert resp.status == 200 and resp.complete
        assert resp.chunked == (kind == "chunked")
        assert len(resp.body) == size
        assert sha256(resp.body) == resp.header("X-Body-Sha256")
        assert (await c.request("GET", "/after")).json()["path"] == "/after"


@async_test
async def test_slow_reading_client_pauses_upstream_instead_of_buffering_the_body() -> None:
    # Kernel socket buffers on loopback can hold many MB, so "the backend could not finish" is no fair test.
    # What the proxy controls: it stops reading the upstream and its own buffer towards the client stays small.
    size = 16 * MB
    async with stack(chunk_size=16384) as s:
        server = s.proxy.server
        async with await s.proxy.client(rcvbuf=65536) as c:
            await c.send(build_request("GET", f"/bytes/{size}"))
            head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
            assert b"200 OK" in head
            def upstreams() -> list[Any]:
                return [d.queue[0].upstream for d in server.connections if d.queue and d.queue[0].upstream]

            await wait_until(lambda: any(not u.transport.is_reading() for u in upstreams() if u.transport),
                             what="the proxy to pause reading the upstream")
            buffered = [d.transport.get_write_buffer_size() for d in server.connections if d.transport]
            assert max(buffered) < MB
            assert s.backend.sent_body_bytes < size
            body = await asyncio.wait_for(c.reader.readexactly(size), 10)
            assert sha256(body) == sha256(pattern(size))


@async_test
async def test_expect_100_continue_gets_interim_response_before_body_is_sent() -> None:
    body = b"x" * 1000
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("POST", "/upload", [("Expect", "100-continue"), ("Content-Length", "1000")]))
        interim = await c.response(informational=True)
        assert interim.status == 100
        await c.send(body)
        final = await c.response()
        assert final.status == 200
        assert final.json()["body_sha256"] == sha256(body)
        assert s.backend.requests[0].header("expect") is None  # we answered it; the backend is not asked


@async_test
async def test_head_response_has_no_body_although_backend_announces_length() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("HEAD", "/bytes/5000")
        assert resp.status == 200
        assert resp.header("Content-Length") == "5000"
        assert (await c.request("GET", "/after")).json()["path"] == "/after"


@async_test
async def test_head_response_from_backend_that_wrongly_sends_a_body_gives_client_no_body() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("HEAD", "/head-with-body")
        assert resp.status == 200
        follow = await c.request("GET", "/after")  # the stray "hello" must not show up as a response here
        assert follow.json()["path"] == "/after"


@pytest.mark.parametrize("status", [204, 304])
@async_test
async def test_bodiless_status_passes_without_body(status: int) -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", f"/status/{status}")
        assert resp.status == status
        assert not resp.has("Transfer-Encoding")
        assert (await c.request("GET", "/after")).json()["path"] == "/after"


@async_test
async def test_upstream_103_early_hints_is_dropped() -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/early-hints"))
        first = await c.response(informational=True)
        assert first.status == 200
        assert first.json()["path"] == "/early-hints"


@async_test
async def test_pipelined_requests_are_answered_in_order_despite_backend_delays() -> None:
    paths = ["/delay/0.2", "/delay/0.05", "/delay/0"]
    async with stack(pods=3) as s, await s.proxy.client() as c:
        await c.send(b"".join(build_request("GET", p) for p in paths))
        answered = [(await c.response()).json()["path"] for _ in paths]
        assert answered == paths


@async_test
async def test_pipelined_requests_followed_by_half_close_are_all_answered() -> None:
    # `printf 'GET ...GET ...' | nc -N`: the client shuts down its sending side after the last request.
    paths = ["/p/1", "/p/2", "/p/3"]
    async with stack() as s, await s.proxy.client() as c:
        await c.send(b"".join(build_request("GET", p) for p in paths))
        c.writer.write_eof()
        answered = [(await c.response()).json()["path"] for _ in paths]
        assert answered == paths
        assert await c.at_eof()
