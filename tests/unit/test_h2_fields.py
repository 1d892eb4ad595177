"""runtime.h2_fields: the checks of a client's HTTP/2 header list that replace h2's validation (issue 4)."""

from __future__ import annotations

import pytest

from pyngress.runtime.h2_fields import request_malformed, trailers_malformed

GOOD = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example"), (b":path", b"/x")]


def test_an_ordinary_request_is_well_formed() -> None:
    assert not request_malformed([*GOOD, (b"accept", b"*/*"), (b"te", b"trailers"), (b"x-empty", b"")])
    assert not request_malformed([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                                  (b"host", b"a.example")])  # Host instead of :authority
    assert not request_malformed([(b":method", b"CONNECT"), (b":authority", b"a.example:443")])
    assert not request_malformed([(b":method", b"CONNECT"), (b":protocol", b"websocket"), *GOOD[1:]])


@pytest.mark.parametrize("fields", [
    [*GOOD, (b"X-Upper", b"1")],  # upper-case name
    [*GOOD, (b"x a", b"1")],  # space in a name
    [*GOOD, (b"x:a", b"1")],  # colon inside a name
    [*GOOD, (b"", b"1")],  # empty name
    [*GOOD, (b"x-a", b"1\r\nx-injected: 1")],  # CRLF: would split the HTTP/1.1 head
    [*GOOD, (b"x-a", b"1\nx-injected: 1")],
    [*GOOD, (b"x-a", b"nul\x00")],
    [*GOOD, (b"x-a", b" padded")],
    [*GOOD, (b"x-a", b"padded\t")],
    [*GOOD, (b"connection", b"close")],
    [*GOOD, (b"transfer-encoding", b"chunked")],
    [*GOOD, (b"keep-alive", b"5")],
    [*GOOD, (b"upgrade", b"h2c")],
    [*GOOD, (b"te", b"gzip")],
    [*GOOD, (b":foo", b"1")],  # unknown pseudo-header
    [*GOOD, (b":path", b"/again")],  # duplicate
    [(b"accept", b"*/*"), *GOOD],  # pseudo-header after a regular field
    GOOD[:1] + GOOD[2:],  # no :scheme
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"")],  # empty :path
    GOOD[1:],  # no :method
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")],  # neither :authority nor Host
    [*GOOD, (b"host", b"b.example")],  # Host differs from :authority
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"a"), (b"host", b"a")],
    [*GOOD, (b":protocol", b"websocket")],  # :protocol without CONNECT (and after :path: still bad)
    [(b":method", b"GET"), (b":protocol", b"websocket"), *GOOD[1:]],
    [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")],  # plain CONNECT with :path
])
def test_malformed_requests_are_recognised(fields: list[tuple[bytes, bytes]]) -> None:
    assert request_malformed(fields)


def test_trailers_take_no_pseudo_headers_and_the_same_field_rules() -> None:
    assert not trailers_malformed([(b"grpc-status", b"0"), (b"x-sum", b"abc")])
    assert trailers_malformed([(b":status", b"200")])
    assert trailers_malformed([(b"X-Sum", b"1")])
    assert trailers_malformed([(b"x-sum", b"1\r\n")])
