"""HTTP/1.1 rules the proxy applies, as data and small pure functions (no I/O here).

Header names are classified once, when the parser hands them over (`REQUEST_HEADER_ROLE`), so the hot path does
one lower() and one dict lookup per header and never scans the list twice. Hop-by-hop headers (RFC 9110 7.6.1:
Connection and the names it lists, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) are never
forwarded; the proxy frames each side of the connection itself.

Generated responses (404, 502, 503, 504, 400...) all come from `generated_response`: a short text body,
`Server: pyngress` and `Date`, and an explicit Connection header.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

# What the request side does with a header, by lower-cased name. Anything absent is forwarded as is.
FORWARD: Final = 0
DROP: Final = 1  # hop-by-hop, or rewritten by the proxy (X-Forwarded-*, X-Real-IP)
HOST: Final = 2
CONTENT_LENGTH: Final = 3
TRANSFER_ENCODING: Final = 4
CONNECTION: Final = 5
EXPECT: Final = 6
FORWARDED_FOR: Final = 7  # X-Forwarded-For (or the configured forwarded-for-header)
REQUEST_ID: Final = 8
FORWARDED_PROTO: Final = 9
FORWARDED_HOST: Final = 10
FORWARDED_PORT: Final = 11
UPGRADE: Final = 12
COOKIE: Final = 13  # forwarded as is, and kept aside for cookie affinity

REQUEST_HEADER_ROLE: Final[dict[bytes, int]] = {
    b"host": HOST,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"keep-alive": DROP,
    b"proxy-connection": DROP,
    b"proxy-authorization": DROP,
    b"proxy-authenticate": DROP,
    b"te": DROP,
    b"trailer": DROP,
    b"upgrade": UPGRADE,
    b"http2-settings": DROP,  # RFC 9113 3.2.1 (h2c upgrade): hop-by-hop, never forwarded
    b"expect": EXPECT,
    b"x-forwarded-for": FORWARDED_FOR,
    b"x-real-ip": DROP,
    b"x-request-id": REQUEST_ID,
    b"x-forwarded-proto": FORWARDED_PROTO,
    b"x-forwarded-host": FORWARDED_HOST,
    b"x-forwarded-port": FORWARDED_PORT,
    b"cookie": COOKIE,
}

# Response headers the proxy drops: it decides the framing and the connection's fate towards the client.
RESPONSE_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)

IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


class RequestError(Exception):
    """The request is refused with `status`; raised from parser callbacks to stop parsing."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def transfer_codings(value: bytes) -> bytes | None:
    """The request's transfer codings, normalised ("gzip, chunked"), or None when the framing is faulty.

    llhttp rejects a Transfer-Encoding whose last coding is not chunked, but only after the head callbacks
    have run, so we decide here, before anything is forwarded (RFC 9112 6.3: with any other final coding the
    length is unknowable). Codings under chunked (gzip, deflate...) are kept: we re-chunk the body and tell
    the upstream the same list, so what it decodes is what the client sent.
    """
    codings = [c.strip(b" \t").lower() for c in value.split(b",")]
    if codings[-1] != b"chunked" or b"chunked" in codings[:-1] or b"" in codings:
        return None
    return b", ".join(codings)


def connection_tokens(value: bytes) -> list[bytes]:
    """The comma-separated, lower-cased options of a Connection header."""
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def without_fields(lines: list[bytes], names: set[bytes]) -> list[bytes]:
    """`lines` holds fields as runs of 4 items (name, b": ", value, CRLF): drop those whose name is in `names`."""
    kept: list[bytes] = []
    for i in range(0, len(lines), 4):
        if lines[i].lower() not in names:
            kept += lines[i : i + 4]
    return kept


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def body_allowed(status: int, method: bytes) -> bool:
    """RFC 9110 6.4.1: no content in responses to HEAD, and in 1xx, 204 and 304 responses."""
    return method != b"HEAD" and status >= 200 and status not in (204, 304)


def generated_response(
    status: int,
    date: bytes,
    *,
    close: bool,
    head_only: bool = False,
    extra_headers: bytes = b"",
) -> bytes:
    """A complete response made by the proxy itself, in one piece (one write)."""
    reason = reason_phrase(status)
    body = b"%d %s\n" % (status, reason)
    head = (
        b"HTTP/1.1 %d %s\r\nServer: pyngress\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n%s\r\n"
        % (status, reason, date, len(body), b"close" if close else b"keep-alive", extra_headers)
    )
    return head if head_only else head + body


def chunk_header(size: int) -> bytes:
    return b"%x\r\n" % size
