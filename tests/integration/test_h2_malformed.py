"""Malformed HTTP/2 requests are refused by our own checks (runtime.h2_fields), stream by stream (issue 4)."""

from __future__ import annotations

from h2client import H2Client, H2Response
from harness import async_test, stack

PROTOCOL_ERROR = 0x1


def send_raw(client: H2Client, fields: list[tuple[bytes, bytes]], *, end: bool = True) -> int:
    """Send a header list as it is: the client's own h2 checks are off, as a hostile client's would be."""
    client.conn.config.validate_outbound_headers = False
    client.conn.config.normalize_outbound_headers = False
    stream_id = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream_id, fields, end_stream=end)
    client.responses[stream_id] = H2Response()
    client.flush()
    return stream_id


GOOD = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.com"), (b":path", b"/bad")]
MALFORMED = [
    [*GOOD, (b"x-a", b"1\r\nx-injected: yes")],  # would split the HTTP/1.1 head: header injection
    [*GOOD, (b"X-Upper", b"1")],
    [*GOOD, (b"transfer-encoding", b"chunked")],  # connection-specific: a framing field towards HTTP/1.1
    [*GOOD, (b"te", b"gzip")],
    [*GOOD, (b":path", b"/twice")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/bad")],  # no :authority and no Host
    [*GOOD, (b"host", b"other.example")],
]


@async_test
async def test_malformed_requests_are_reset_and_never_reach_the_pod() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        ids = [send_raw(client, fields) for fields in MALFORMED]
        for stream_id in ids:
            assert (await client.response(stream_id)).reset == PROTOCOL_ERROR
        assert (await client.request("GET", "/good")).status == 200  # the connection lives on
        assert [r.target for r in s.backend.requests] == ["/good"]


@async_test
async def test_malformed_trailers_reset_the_stream() -> None:
    async with stack() as s, await H2Client.connect(s.proxy.port) as client:
        post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"example.com"), (b":path", b"/p")]
        stream_id = send_raw(client, post, end=False)
        client.conn.send_data(stream_id, b"body")
        client.conn.send_headers(stream_id, [(b"X-Bad-Trailer", b"1")], end_stream=True)
        client.flush()
        assert (await client.response(stream_id)).reset == PROTOCOL_ERROR
        assert (await client.request("GET", "/good")).status == 200
