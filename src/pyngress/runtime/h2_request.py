"""An HTTP/2 request's header list turned into an HTTP/1.1 Exchange for the upstream pool (issue 4).

The pseudo-headers become the request line and Host (`:authority`, else a `host` field); the other fields go
through the same `request_head.HeadBuilder` as an HTTP/1.1 request, so forwarded headers, request ids,
hop-by-hop dropping and the size limits are identical. Split `cookie` fields are joined (RFC 9113 8.2.3). A
body whose length is not announced is sent chunked. RFC 8441's `CONNECT` with `:protocol websocket` becomes
an HTTP/1.1 WebSocket upgrade (GET, `Upgrade: websocket`, a fresh `Sec-WebSocket-Key`); any other CONNECT is
refused by HeadBuilder (405), as over HTTP/1.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyngress.runtime import h2_tunnel, http1, request_head

if TYPE_CHECKING:
    from pyngress.runtime.exchange import Exchange
    from pyngress.runtime.h2_stream import H2Stream
    from pyngress.runtime.state import Serving


def exchange_for(stream: H2Stream, headers: list[tuple[bytes, bytes]], ended: bool,
                 serving: Serving) -> Exchange | int:
    """The Exchange for `headers` (h2's validated list), or the status to refuse the request with."""
    builder = request_head.HeadBuilder(serving)
    method = path = authority = protocol = b""
    cookies: list[bytes] = []
    length = False
    try:
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                elif name == b":protocol":
                    protocol = value
                continue
            if name == b"cookie":
                cookies.append(value)
                continue
            if name == b"host":
                authority = authority or value
                continue
            length = length or name == b"content-length"
            status = builder.add_header(name, value)
            if status:
                return status
        builder.add_url(path)
    except http1.RequestError as exc:
        return exc.status
    if not authority:
        return 400
    if method == b"CONNECT" and protocol.lower() == b"websocket":  # RFC 8441: a WebSocket over this stream
        method, ended = b"GET", True  # becomes an HTTP/1.1 upgrade; the stream's DATA is the tunnel's
        for name, value in ((b"upgrade", b"websocket"), (b"connection", b"upgrade"),
                            (b"sec-websocket-key", h2_tunnel.websocket_key())):
            builder.add_header(name, value)
    if cookies:
        builder.add_header(b"cookie", b"; ".join(cookies))
    builder.add_header(b"host", authority)
    if not ended and not length:
        builder.add_header(b"transfer-encoding", b"chunked")  # HTTP/2 bodies have no announced length
    trusted = serving.trust_all or (bool(serving.trusted) and serving.is_trusted(stream.client_ip))
    return builder.finish(stream, method, "1.1", True, stream.connection.peer, trusted, stream.server.request_ids)
