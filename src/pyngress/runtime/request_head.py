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
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING

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
    """Collects one request head. Rare headers go to `special` (role -> value), allocated only when seen."""

    __slots__ = ("host", "hosts", "lines", "roles", "serving", "size", "special", "url")

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.roles = serving.header_roles
        self.url = b""
        self.lines: list[bytes] = []
        self.size = 0
        self.host: bytes | None = None
        self.hosts = 0
        self.special: dict[int, bytes] | None = None

    def add_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.serving.settings.header_buffer_size:
            raise http1.RequestError(414)

    def add_header(self, name: bytes, value: bytes) -> int:
        """Returns 0, or the status to refuse the request with."""
        n = len(name) + len(value) + 4
        self.size += n
        settings = self.serving.settings
        if n > settings.header_buffer_size or self.size > settings.max_head_size:
            return 431
        role = self.roles.get(name)
        if role is None:
            role = self.serving.classify(name)
        if role == http1.FORWARD:
            self.lines += (name, b": ", value, b"\r\n")
        elif role == http1.HOST:
            self.host = value
            self.hosts += 1
        elif role != http1.DROP:
            special = self.special
            if special is None:
                special = self.special = {}
            old = special.get(role)
            # repeated list-valued fields are joined (RFC 9110 5.3); llhttp refuses a second Content-Length
            special[role] = value if old is None else old + b", " + value
        return 0

    def finish(self, client: Downstream, method: bytes, version: str, keep_alive: bool, client_ip: str,
               local_port: int, next_id: Callable[[], bytes]) -> Exchange | int:
        """Check what llhttp does not, and build the Exchange with its upstream head; or a status to refuse."""
        http10 = version == "1.0"
        if not http10 and version != "1.1":
            return 505 if version >= "2" else 400  # HTTP/0.9 and unknown versions
        if method == b"CONNECT":
            return 405
        if self.hosts > 1 or (not self.hosts and not http10):
            return 400  # RFC 9112 3.2: exactly one Host in HTTP/1.1
        special = self.special or _NONE
        framing = NO_BODY
        if http1.TRANSFER_ENCODING in special:
            if http10:
                return 400  # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing
            codings = http1.transfer_codings(special[http1.TRANSFER_ENCODING])
            if codings is None:
                return 400
            special[http1.TRANSFER_ENCODING] = codings
            framing = CHUNKED
        elif special.get(http1.CONTENT_LENGTH, b"0") != b"0":
            framing = LENGTH
        url, host = self.url, self.host or b""
        if url[:1] != b"/" and url != b"*":
            parsed = _absolute_form(url)
            if parsed is None:
                return 400
            host, url = parsed
        query = url.find(b"?")
        path = url if query < 0 else url[:query]
        if http1.CONNECTION in special:
            self._drop_connection_options(special[http1.CONNECTION])
        serving = self.serving
        trusted = serving.trust_all or (bool(serving.trusted) and serving.is_trusted(client_ip))
        head = self._build(method, url, host, framing, client_ip, local_port, trusted, next_id)
        upgrade = http1.UPGRADE in special
        ex = Exchange(client, method, head, host, path, framing, keep_alive and not upgrade, http10)
        expect = special.get(http1.EXPECT)
        ex.expect_continue = expect is not None and expect.lower() == b"100-continue"
        return ex

    def _build(self, method: bytes, url: bytes, host: bytes, framing: int, client_ip: str, port: int,
               trusted: bool, next_id: Callable[[], bytes]) -> bytes:
        special = self.special or _NONE
        peer = client_ip.encode()
        xff = special.get(http1.FORWARDED_FOR) if trusted else None
        if xff:
            xff = xff + b", " + peer
            real_ip = _rightmost_untrusted(xff, self.serving)
        else:
            xff = real_ip = peer
        get = special.get if trusted else _NONE.get
        parts = [method, b" ", url, b" HTTP/1.1\r\nHost: ", host, b"\r\n", *self.lines,
                 b"X-Request-ID: ", special.get(http1.REQUEST_ID) or next_id(),
                 b"\r\nX-Real-IP: ", real_ip,
                 b"\r\nX-Forwarded-For: ", xff,
                 b"\r\nX-Forwarded-Host: ", get(http1.FORWARDED_HOST) or host,
                 b"\r\nX-Forwarded-Port: ", get(http1.FORWARDED_PORT) or b"%d" % port,
                 b"\r\nX-Forwarded-Proto: ", get(http1.FORWARDED_PROTO) or b"http", b"\r\n"]
        if framing == CHUNKED:
            parts += (b"Transfer-Encoding: ", special[http1.TRANSFER_ENCODING], b"\r\n")  # body re-chunked
        elif framing == LENGTH:
            parts += (b"Content-Length: ", special[http1.CONTENT_LENGTH], b"\r\n")
        elif method in (b"POST", b"PUT", b"PATCH"):
            parts.append(b"Content-Length: 0\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _drop_connection_options(self, connection: bytes) -> None:
        # Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1); rare, so done as a second pass.
        named = set(http1.connection_tokens(connection)) - {b"close", b"keep-alive", b"upgrade"}
        if named:
            self.lines = http1.without_fields(self.lines, named)


_NONE: dict[int, bytes] = {}


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
