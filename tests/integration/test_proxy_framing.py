"""Malformed and ambiguous request framing: refused with its status, connection closed, backend never reached."""

from __future__ import annotations

import pytest
from harness import Stack, async_test, build_request, stack

H = b"Host: test.local\r\n"

# (id, raw request, expected status). Each is sent in one write on a fresh connection.
REFUSED = [
    ("content_length_with_transfer_encoding",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two_different_content_lengths",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("two_equal_content_lengths",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("content_length_list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("content_length_not_a_number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("transfer_encoding_gzip_only",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello", 400),
    ("transfer_encoding_chunked_then_gzip",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("whitespace_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-Thing : 1\r\n\r\n", 400),
    ("obs_fold_continuation_line", b"GET / HTTP/1.1\r\n" + H + b"X-Thing: 1\r\n  continued\r\n\r\n", 400),
    ("bare_lf_line_endings", b"GET / HTTP/1.1\nHost: test.local\nX-Thing: 1\n\n", 400),
    ("bare_lf_after_one_header", b"GET / HTTP/1.1\r\nHost: test.local\nX-Thing: 1\r\n\r\n", 400),
    ("nul_in_header_value", b"GET / HTTP/1.1\r\n" + H + b"X-Thing: a\x00b\r\n\r\n", 400),
    ("ctl_in_header_value", b"GET / HTTP/1.1\r\n" + H + b"X-Thing: a\x01b\r\n\r\n", 400),
    ("cr_in_header_value", b"GET / HTTP/1.1\r\n" + H + b"X-Thing: a\rb\r\n\r\n", 400),
    ("http10_with_transfer_encoding",
     b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("http11_without_host", b"GET / HTTP/1.1\r\nX-Thing: 1\r\n\r\n", 400),
    ("two_host_headers", b"GET / HTTP/1.1\r\n" + H + b"Host: evil.test\r\n\r\n", 400),
    ("request_line_over_8k", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("header_section_over_32k",
     b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-Fill-%d: %s\r\n" % (i, b"v" * 4000) for i in range(9)) + b"\r\n",
     431),
    ("one_header_line_over_8k", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    ("http09_request", b"GET /\r\n", 400),  # a real HTTP/0.9 request: one line, nothing after it
    ("http09_request_line_then_blank_line", b"GET /\r\n\r\n", 400),
    ("http09_version_token", b"GET / HTTP/0.9\r\n\r\n", 400),
    ("http12_version", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    ("unknown_method", b"BREW / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect_method", b"CONNECT test.local:443 HTTP/1.1\r\nHost: test.local:443\r\n\r\n", 405),
]


# Broken bodies behind a valid head: a streaming proxy forwards the head before it sees the body, so what it
# owes the backend is that the request never arrives complete (the upstream connection is cut).
BROKEN_BODIES = [
    ("bad_chunk_size", b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\nzz\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("chunk_size_overflow", b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"1000000000000000000\r\nhello\r\n0\r\n\r\n"),
    ("chunk_data_longer_than_size", b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                                    b"3\r\nhello\r\n0\r\n\r\n"),
]


async def warm(s: Stack) -> int:
    """Leave a pooled keep-alive connection to the backend, as in production; returns the bytes it got."""
    assert (await s.proxy.get("/warm")).status == 200
    return s.backend.bytes_received


@pytest.mark.parametrize(("raw", "status"), [pytest.param(r, s, id=i) for i, r, s in REFUSED])
@async_test
async def test_malformed_request_is_refused_and_never_reaches_backend(raw: bytes, status: int) -> None:
    async with stack() as s:
        await _refused_without_reaching(s, raw, status)
        assert s.backend.connections == 0


@pytest.mark.parametrize(("raw", "status"), [pytest.param(r, s, id=i) for i, r, s in REFUSED])
@async_test
async def test_malformed_request_never_reaches_backend_over_pooled_connection(raw: bytes, status: int) -> None:
    async with stack() as s:
        warmed = await warm(s)
        await _refused_without_reaching(s, raw, status, warmed)


async def _refused_without_reaching(s: Stack, raw: bytes, status: int, warmed: int = 0) -> None:
    async with await s.proxy.client() as c:
        await c.send(raw)
        resp = await c.response(timeout=2.0)
        assert resp.status == status
        assert resp.header("Connection") == "close"
        assert await c.at_eof()
    assert s.backend.bytes_received == warmed, f"the backend got {s.backend.bytes_received - warmed} bytes"


@pytest.mark.parametrize("raw", [pytest.param(r, id=i) for i, r in BROKEN_BODIES])
@async_test
async def test_broken_chunked_body_is_refused_and_backend_never_gets_a_complete_request(raw: bytes) -> None:
    async with stack() as s:
        await warm(s)
        async with await s.proxy.client() as c:
            await c.send(raw)
            assert (await c.response()).status == 400
            assert await c.at_eof()
        await s.proxy.server.drain(1.0)  # the upstream connection, if one carried the head, is closed by now
    assert [r.path for r in s.backend.requests] == ["/warm"]


SMUGGLING = [
    ("cl_te", b"POST /second HTTP/1.1\r\n" + H + b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("te_cl", b"POST /second HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
              b"5c\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n0\r\n\r\n"),
    ("cl_cl", b"POST /second HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nContent-Length: 40\r\n\r\n"
              b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("te_obfuscated", b"POST /second HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n"
                      b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("te_space_before_colon", b"POST /second HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n"
                              b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
    ("te_obs_fold", b"POST /second HTTP/1.1\r\n" + H + b"X-Pad: 1\r\n Transfer-Encoding: chunked\r\n\r\n"
                    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n"),
]


@pytest.mark.parametrize("hidden", [pytest.param(r, id=i) for i, r in SMUGGLING])
@async_test
async def test_request_hidden_behind_ambiguous_framing_never_reaches_backend(hidden: bytes) -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/first") + hidden)
        first = await c.response()
        assert first.status == 200
        assert first.json()["path"] == "/first"
        await c.read_to_eof()  # whatever the proxy says about the second request, it then closes
    assert [r.path for r in s.backend.requests] == ["/first"]


@async_test
async def test_malformed_request_pipelined_behind_valid_one_gets_400_after_first_response() -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/first") + dict(SMUGGLING)["cl_cl"])
        assert (await c.response()).status == 200
        refused = await c.response()
        assert refused.status == 400
        assert refused.header("Connection") == "close"
        assert await c.at_eof()


@async_test
async def test_request_inside_a_content_length_body_reaches_backend_only_as_body() -> None:
    inner = build_request("GET", "/smuggled")
    async with stack() as s, await s.proxy.client() as c:
        await c.send(build_request("GET", "/first") + build_request("POST", "/second", body=inner)
                     + build_request("GET", "/third"))
        assert [(await c.response()).json()["path"] for _ in range(3)] == ["/first", "/second", "/third"]
    assert [r.path for r in s.backend.requests] == ["/first", "/second", "/third"]
    assert s.backend.requests[1].body == inner


@async_test
async def test_refusal_of_head_request_has_no_body() -> None:
    # RFC 9110 9.3.2: a response to HEAD carries no content, even a generated one.
    async with stack() as s, await s.proxy.client() as c:
        await c.send(b"HEAD / HTTP/1.1\r\n" + H + b"X-Thing: a\x01b\r\n\r\n")
        resp = await c.response("HEAD")
        assert resp.status == 400
        assert await c.read_to_eof() == b""
