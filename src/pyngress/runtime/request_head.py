"""Building the upstream request head while the client's head is parsed.

`HeadBuilder` receives the URL and each header from the parser callbacks, classifies each header once by its
lower-cased name, keeps the forwardable ones as ready-made lines, and at the end (`finish`) checks the rules
llhttp leaves to us and produces an `Exchange` carrying the complete head, or a 4xx status.

Forwarded headers (RFC 7239 predecessors, as ingress-nginx sets them):
- untrusted peer (the default): X-Forwarded-For, X-Real-IP, X-Forwarded-Proto/Host/Port are overwritten with
  what we saw: the peer address, our scheme, the Host header, our port;
- trusted peer (in proxy-real-ip-cidr, or any peer with use-forwarded-headers and no CIDR list): the client's
  X-Forwarded-For is kept and the peer appended; X-Real-IP is the right-most address of that chain that is not
  a trusted proxy; X-Forwarded-Proto/Host/Port are passed through when present.
X-Request-ID is passed through when present, else generated (unique per worker: random prefix + counter).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from itertools import count
from typing import TYPE_CHECKING

from pyngress.model import ProxySettings
from pyngress.runtime import http1
from pyngress.runtime.exchange import CHUNKED, LENGTH, NO_BODY, Exchange

if TYPE_CHECKING:
    from pyngress.runtime.downstream import Downstream
    from pyngress.runtime.state import Serving


def request_id_source() -> Callable[[], bytes]:
    prefix = os.urandom(8).hex().encode()
    counter = count(1)
    return lambda: b"%s%016x" % (prefix, next(counter))


class HeadBuilder:
    __slots__ = ("chunk_te", "connection", "content_length", "expect", "fhost", "fport", "fproto", "hosts",
                 "limit_line", "limit_total", "lines", "request_id", "roles", "size", "te", "upgrade", "url",
                 "xff")

    def __init__(self, settings: ProxySettings, roles: Mapping[bytes, int]) -> None:
        self.roles = roles
        self.limit_line = settings.header_buffer_size
        self.limit_total = settings.max_head_size
        self.url = b""
        self.lines: list[bytes] = []
        self.size = 0
        self.hosts: list[bytes] = []
        self.content_length: bytes | None = None
        self.te: bytes | None = None
        self.chunk_te = False
        self.connection: bytes | None = None
        self.expect: bytes | None = None
        self.xff: bytes | None = None
        self.request_id: bytes | None = None
        self.fproto: bytes | None = None
        self.fhost: bytes | None = None
        self.fport: bytes | None = None
        self.upgrade = False

    def add_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limit_line:
            raise http1.RequestError(414)

    def add_header(self, name: bytes, value: bytes) -> int:
        """Returns 0, or the status to refuse the request with."""
        n = len(name) + len(value) + 4
        self.size += n
        if n > self.limit_line or self.size > self.limit_total:
            return 431
        role = self.roles.get(name.lower(), 0)
        if role == http1.FORWARD:
            if name[:6].lower() == b"proxy-":
                return 0
            self.lines += (name, b": ", value, b"\r\n")
        elif role == http1.HOST:
            self.hosts.append(value)
        elif role == http1.CONTENT_LENGTH:
            self.content_length = value  # llhttp refuses a second one
        elif role == http1.TRANSFER_ENCODING:
            self.te = value
        elif role == http1.CONNECTION:
            self.connection = value if self.connection is None else self.connection + b"," + value
        elif role == http1.FORWARDED_FOR:
            self.xff = value if self.xff is None else self.xff + b", " + value
        elif role == http1.REQUEST_ID:
            self.request_id = value
        elif role == http1.EXPECT:
            self.expect = value
        elif role == http1.FORWARDED_PROTO:
            self.fproto = value
        elif role == http1.FORWARDED_HOST:
            self.fhost = value
        elif role == http1.FORWARDED_PORT:
            self.fport = value
        elif role == http1.UPGRADE:
            self.upgrade = True
        return 0

    def finish(self, client: Downstream, method: bytes, version: str, keep_alive: bool, client_ip: str,
               local_port: int, trusted: Serving | None, next_id: Callable[[], bytes]) -> Exchange | int:
        """Check what llhttp does not, and build the Exchange with its upstream head; or a status to refuse."""
        http10 = version == "1.0"
        if version not in ("1.1", "1.0"):
            return 505 if version >= "2" else 400  # HTTP/0.9 and unknown versions
        if method == b"CONNECT":
            return 405
        if len(self.hosts) > 1 or (not self.hosts and not http10):
            return 400  # RFC 9112 3.2: exactly one Host in HTTP/1.1
        framing = NO_BODY
        if self.te is not None:
            if http10:
                return 400  # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing
            framing = CHUNKED
        elif self.content_length is not None and self.content_length != b"0":
            framing = LENGTH
        url, host = self.url, self.hosts[0] if self.hosts else b""
        if url[:1] != b"/" and url != b"*":
            parsed = _absolute_form(url)
            if parsed is None:
                return 400
            host, url = parsed
        query = url.find(b"?")
        path = url if query < 0 else url[:query]
        if self.connection is not None:
            self._drop_connection_options()
        head = self._build(method, url, host, framing, client_ip, local_port, trusted, next_id)
        ex = Exchange(client, method, head, host, path, framing, keep_alive and not self.upgrade, http10)
        ex.expect_continue = self.expect is not None and self.expect.lower() == b"100-continue"
        return ex

    def _build(self, method: bytes, url: bytes, host: bytes, framing: int, client_ip: str, port: int,
               trusted: Serving | None, next_id: Callable[[], bytes]) -> bytes:
        peer = client_ip.encode()
        if trusted is not None and self.xff:
            xff = self.xff + b", " + peer
            real_ip = _rightmost_untrusted(xff, trusted)
        else:
            xff = real_ip = peer
        if trusted is None:
            self.fproto = self.fhost = self.fport = None
        parts = [method, b" ", url, b" HTTP/1.1\r\nHost: ", host, b"\r\n", *self.lines,
                 b"X-Request-ID: ", self.request_id or next_id(),
                 b"\r\nX-Real-IP: ", real_ip,
                 b"\r\nX-Forwarded-For: ", xff,
                 b"\r\nX-Forwarded-Host: ", self.fhost or host,
                 b"\r\nX-Forwarded-Port: ", self.fport or b"%d" % port,
                 b"\r\nX-Forwarded-Proto: ", self.fproto or b"http", b"\r\n"]
        if framing == CHUNKED:
            parts += (b"Transfer-Encoding: ", self.te or b"chunked", b"\r\n")
        elif framing == LENGTH:
            parts += (b"Content-Length: ", self.content_length or b"0", b"\r\n")
        elif method in (b"POST", b"PUT", b"PATCH"):
            parts.append(b"Content-Length: 0\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _drop_connection_options(self) -> None:
        # Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1); rare, so done as a second pass.
        assert self.connection is not None
        named = set(http1.connection_tokens(self.connection)) - {b"close", b"keep-alive", b"upgrade"}
        if not named:
            return
        lines, kept = self.lines, []
        for i in range(0, len(lines), 4):
            if lines[i].lower() not in named:
                kept += lines[i:i + 4]
        self.lines = kept


def _absolute_form(url: bytes) -> tuple[bytes, bytes] | None:
    """RFC 9112 3.2.2: for "GET http://host/path", the URL's authority replaces Host."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    authority, slash, path = rest.partition(b"/")
    if not authority or b"@" in authority:
        return None
    return authority, slash + path if slash else b"/"


def _rightmost_untrusted(xff: bytes, serving: Serving) -> bytes:
    """Walk the chain from the right, past our trusted proxies: the first address that is not one is the
    client. A hop that is not an IP address stops the walk (we cannot judge it, so we do not go past it)."""
    hops = [h.strip() for h in xff.split(b",")]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop.decode("latin-1")))
        except ValueError:
            return hop
        if not serving.is_trusted(address):
            return hop
    return hops[0]
