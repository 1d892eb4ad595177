"""Building the upstream request head while the client's head is parsed.

`HeadBuilder` receives the URL and each header from the parser callbacks, classifies each header once by its
lower-cased name, keeps the forwardable ones as ready-made lines, and at the end (`finish`) checks the rules
llhttp leaves to us and produces an `Exchange` carrying the complete head, or a 4xx status.

Forwarded headers (RFC 7239 predecessors, as ingress-nginx sets them):
- untrusted peer (the default): X-Forwarded-For, X-Real-IP, X-Forwarded-Proto/Host/Port are overwritten with
  what we saw: the peer address, our scheme, the Host header, our port;
- trusted peer (in proxy-real-ip-cidr, or any peer with use-forwarded-headers and no CIDR list): the client's
  X-Forwarded-For (or the header named by forwarded-for-header) is kept and the peer appended; the client is
  the right-most address of that chain that is not a trusted proxy (ports and IPv6 brackets stripped: "[::1]:80"
  is ::1; a hop that is not an address stops the walk, and the last address judged is the client). It goes
  upstream as X-Real-IP and is the address limits and access lists key on (`Exchange.client_address`);
  X-Forwarded-Proto/Host/Port are passed through when present.
The connection's address is the TCP peer, or the source of a PROXY protocol header (runtime.proxy_listener).
X-Request-ID is passed through when present, else generated (unique per worker: random prefix + counter).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from pyngress.policy.cidr import CidrSet, address_int
from pyngress.runtime import http1
from pyngress.runtime.exchange import CHUNKED, LENGTH, NO_BODY, Exchange

if TYPE_CHECKING:
    from pyngress.runtime.client_side import ClientSide
    from pyngress.runtime.state import Serving


_HEX3: Final = tuple(b"%03x" % n for n in range(4096))


class RequestIds:
    """X-Request-ID values: 32 hex digits, 64 random bits per worker then a 64-bit counter. The counter's last
    three digits come from a table, so that all but one id in 4096 cost one concatenation and no formatting."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex().encode()
        self.count = 0
        self.base = self.prefix + b"0" * 13  # the counter's upper 13 digits, redone every 4096 ids

    def __call__(self) -> bytes:
        n = self.count = self.count + 1
        low = n & 0xFFF
        if not low:
            self.base = self.prefix + b"%013x" % (n >> 12)
        return self.base + _HEX3[low]


def request_id_source() -> Callable[[], bytes]:
    return RequestIds()


class Peer:
    """What a client connection forwards in every request head, computed once per connection."""

    __slots__ = ("address", "ip", "port", "scheme", "untrusted_tail")

    def __init__(self, ip: str, local_port: int, https: bool = False) -> None:
        self.ip = ip
        self.address = ip.encode()
        self.port = b"%d" % local_port
        self.scheme = b"https" if https else b"http"  # X-Forwarded-Proto: the client's connection to us
        # the forwarded headers of an untrusted client: all ours, the same for each of its requests
        self.untrusted_tail = (b"\r\nX-Real-IP: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Port: %s"
                               b"\r\nX-Forwarded-Proto: %s\r\n" % (self.address, self.address, self.port,
                                                                     self.scheme))


# The head is assembled in one list: slots for method, URL and host first, then the forwarded fields as they
# are parsed, then ours; one join at the end.
_METHOD: Final = 0
_URL: Final = 2
_HOST: Final = 4
_FIELDS: Final = 6


class HeadBuilder:
    """Collects one request head. Rare headers go to `special` (role -> value), allocated only when seen."""

    __slots__ = ("cookie", "host", "hosts", "lines", "roles", "serving", "size", "special", "url")

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.roles = serving.header_roles
        self.url = b""
        self.lines: list[bytes] = [b"", b" ", b"", b" HTTP/1.1\r\nHost: ", b"", b"\r\n"]
        self.size = 0
        self.host = b""
        self.hosts = 0
        self.special: dict[int, bytes] | None = None
        self.cookie: bytes | None = None  # the Cookie field(s), joined: read by cookie affinity

    def add_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.serving.field_limit:
            raise http1.RequestError(414)

    def add_header(self, name: bytes, value: bytes) -> int:
        """Returns 0, or the status to refuse the request with."""
        n = len(name) + len(value) + 4
        self.size += n
        serving = self.serving
        if n > serving.field_limit or self.size > serving.head_limit:
            return 431
        role = self.roles.get(name)
        if role is None:
            role = serving.classify(name)
        if role == http1.FORWARD:
            self.lines += (name, b": ", value, b"\r\n")
        elif role == http1.HOST:
            self.host = value
            self.hosts += 1
        elif role == http1.COOKIE:
            self.lines += (name, b": ", value, b"\r\n")
            self.cookie = value if self.cookie is None else self.cookie + b"; " + value
        elif role != http1.DROP:
            special = self.special
            if special is None:
                special = self.special = {}
            old = special.get(role)
            # repeated list-valued fields are joined (RFC 9110 5.3); llhttp refuses a second Content-Length
            special[role] = value if old is None else old + b", " + value
        return 0

    def finish(self, client: ClientSide, method: bytes, version: str, keep_alive: bool, peer: Peer,
               trusted: bool, next_id: Callable[[], bytes]) -> Exchange | int:
        """Check what llhttp does not, and build the Exchange with its upstream head; or a status to refuse."""
        http10 = version == "1.0"
        if not http10 and version != "1.1":
            return 505 if version >= "2" else 400  # HTTP/0.9 and unknown versions
        if method == b"CONNECT":
            return 405
        if self.hosts != 1 and (self.hosts or not http10):
            return 400  # RFC 9112 3.2: exactly one Host in HTTP/1.1
        url, host = self.url, self.host
        if url[:1] != b"/" and url != b"*":
            parsed = _absolute_form(url)
            if parsed is None:
                return 400
            host, url = parsed
        query = url.find(b"?")
        path = url if query < 0 else url[:query]
        lines = self.lines
        lines[_METHOD], lines[_URL], lines[_HOST] = method, url, host
        special = self.special
        if special is None and not trusted and self.serving.settings.generate_request_id:
            # the common case: nothing to look at, all forwarded fields ours
            fields = lines[_FIELDS:]
            lines += (b"X-Request-ID: ", next_id(), b"\r\nX-Forwarded-Host: ", host, peer.untrusted_tail)
            if method in _EMPTY_BODY_METHODS:
                lines.append(b"Content-Length: 0\r\n\r\n")
            else:
                lines.append(b"\r\n")
            ex = Exchange(client, method, b"".join(lines), host, path, NO_BODY, keep_alive, http10, url, fields)
            ex.cookie = self.cookie
            return ex
        return self._finish_special(client, method, url, host, path, keep_alive, http10, peer, trusted, next_id)

    def _finish_special(self, client: ClientSide, method: bytes, url: bytes, host: bytes, path: bytes,
                        keep_alive: bool, http10: bool, peer: Peer, trusted: bool,
                        next_id: Callable[[], bytes]) -> Exchange | int:
        special = self.special or {}
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
        if http1.CONNECTION in special:
            self._drop_connection_options(special[http1.CONNECTION])
        lines = self.lines
        fields = lines[_FIELDS:]
        request_id = special.get(http1.REQUEST_ID)
        if request_id is None and self.serving.settings.generate_request_id:
            request_id = next_id()
        if request_id is not None:  # generate-request-id: "false" passes the client's only
            lines += (b"X-Request-ID: ", request_id, b"\r\n")
        lines.append(b"X-Forwarded-Host: ")
        forwarded_client = None
        if trusted:
            forwarded, forwarded_client = self._trusted_fields(special, host, peer)
            lines += forwarded
        else:
            lines += (host, peer.untrusted_tail)
        if framing == CHUNKED:
            lines += (b"Transfer-Encoding: ", special[http1.TRANSFER_ENCODING], b"\r\n")  # body re-chunked
        elif framing == LENGTH:
            lines += (b"Content-Length: ", special[http1.CONTENT_LENGTH], b"\r\n")
        elif method in _EMPTY_BODY_METHODS:
            lines.append(b"Content-Length: 0\r\n")
        upgrade = http1.UPGRADE in special
        # issue 4: only a WebSocket upgrade is forwarded (runtime.tunnel); any other (h2c!) is dropped
        websocket = upgrade and method == b"GET" and not http10 and framing == NO_BODY and \
            special[http1.UPGRADE].strip().lower() == b"websocket"
        if websocket:
            lines.append(b"Connection: upgrade\r\nUpgrade: websocket\r\n")
        lines.append(b"\r\n")
        ex = Exchange(client, method, b"".join(lines), host, path, framing, keep_alive and not upgrade, http10,
                      url, fields)
        if websocket:
            ex.upgrade = b""
        expect = special.get(http1.EXPECT)
        ex.expect_continue = expect is not None and expect.lower() == b"100-continue"
        ex.cookie = self.cookie
        ex.client_address = forwarded_client
        return ex

    def _trusted_fields(self, special: dict[int, bytes], host: bytes, peer: Peer
                        ) -> tuple[tuple[bytes, ...], str | None]:
        """A trusted proxy's X-Forwarded-* are kept; the peer joins the X-Forwarded-For chain. Also returns
        the client that chain names (None: the peer itself)."""
        xff = special.get(http1.FORWARDED_FOR)
        client = None
        if xff:
            xff = xff + b", " + peer.address
            client = rightmost_untrusted(xff, self.serving.trusted_cidrs)
            real_ip = client.encode()
        else:
            xff = real_ip = peer.address
        return (special.get(http1.FORWARDED_HOST) or host,
                b"\r\nX-Real-IP: ", real_ip, b"\r\nX-Forwarded-For: ", xff,
                b"\r\nX-Forwarded-Port: ", special.get(http1.FORWARDED_PORT) or peer.port,
                b"\r\nX-Forwarded-Proto: ", special.get(http1.FORWARDED_PROTO) or peer.scheme, b"\r\n"), client

    def _drop_connection_options(self, connection: bytes) -> None:
        # Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1); rare, so done as a second pass.
        named = set(http1.connection_tokens(connection)) - {b"close", b"keep-alive", b"upgrade"}
        if named:
            head, fields = self.lines[:6], self.lines[6:]
            self.lines = head + http1.without_fields(fields, named)


# Methods whose requests carry a body by definition: without one they get an explicit Content-Length: 0.
_EMPTY_BODY_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})
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


def rightmost_untrusted(xff: bytes, trusted: CidrSet) -> str:
    """Walk the chain from the right (its last hop is our peer), past our trusted proxies: the first address
    that is not one is the client. A hop that is not an IP address stops the walk: we cannot judge it, so we
    do not go past it, and the client is the last address we could read (the proxy that wrote that hop)."""
    client = ""
    for hop in reversed(xff.split(b",")):
        address = hop_address(hop)
        if address is None:
            break
        client = address
        if not trusted.contains(address_int(address)):
            break
    return client


def hop_address(hop: bytes) -> str | None:
    """One X-Forwarded-For hop as an address: "1.2.3.4", "1.2.3.4:5678", "::1", "[::1]:80"; else None."""
    text = hop.strip().decode("latin-1")
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text if address_int(text) is not None else None
