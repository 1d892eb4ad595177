"""Reading the server name (SNI) and ALPN list of a TLS ClientHello without terminating TLS. Pure.

Used by the HTTPS listener for `ssl-passthrough` (`runtime.https_listener`): it peeks at the first bytes of
a connection (MSG_PEEK, nothing consumed), asks `parse_client_hello`, and either relays the raw connection
to a pod or hands the socket, bytes untouched, to the ssl module.

Wire format (RFC 8446 5.1 and 4.1.2, RFC 6066 3, RFC 7301 3.1), all lengths big-endian:

    record:        type 22 (handshake) | version (2) | length (2) | fragment
    handshake:     type 1 (ClientHello) | length (3) | body        -- may span several records
    ClientHello:   version (2) | random (32) | session_id <1> | cipher_suites <2> | compression <1>
                   | extensions <2>: each type (2) | length (2) | data
    server_name (type 0):  list <2>: name_type (1, 0 = host_name) | HostName <2>
    ALPN (type 16):        list <2>: ProtocolName <1>

`<n>` is a vector whose length prefix takes n bytes. The answers are `Incomplete(needed)` (wait until at least
`needed` bytes have arrived: the parser reads record lengths, so it knows), `ClientHello(server_name, alpn)`,
or `NotClientHello(reason)` for anything else (plain HTTP on the TLS port, garbage, a hello over
MAX_HELLO): the caller then lets the ssl module fail the handshake the ordinary way.
"""

from __future__ import annotations

from dataclasses import dataclass

HANDSHAKE_RECORD = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
RECORD_HEADER = 5
# A ClientHello with post-quantum key shares is ~1.8 KB, with many extensions a few KB; 16 KiB (one full
# record) is what OpenSSL and BoringSSL accept as well. A hello larger than this is not worth peeking at.
MAX_HELLO = 16384


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None  # lower case, no trailing dot; None without SNI
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Incomplete:
    needed: int  # total bytes from the start of the connection before the answer can change


@dataclass(frozen=True, slots=True)
class NotClientHello:
    reason: str


Parsed = ClientHello | Incomplete | NotClientHello


class _Malformed(Exception):
    pass


def parse_client_hello(data: bytes) -> Parsed:
    """Parse as much of `data` (the connection's first bytes) as is there."""
    message = bytearray()
    pos = 0
    while True:
        if len(data) < pos + RECORD_HEADER:
            return Incomplete(pos + RECORD_HEADER)
        if data[pos] != HANDSHAKE_RECORD or data[pos + 1] != 3:
            return NotClientHello("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0:
            return NotClientHello("empty handshake record")
        end = pos + RECORD_HEADER + length
        if end > len(data):
            return Incomplete(end) if end <= MAX_HELLO + 4 * RECORD_HEADER else NotClientHello("hello too large")
        message += data[pos + RECORD_HEADER : end]
        pos = end
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                return NotClientHello("first handshake message is not a ClientHello")
            size = int.from_bytes(message[1:4], "big")
            if size > MAX_HELLO:
                return NotClientHello("hello too large")
            if len(message) >= 4 + size:
                try:
                    return _hello(bytes(message[4 : 4 + size]))
                except _Malformed as exc:
                    return NotClientHello(str(exc))


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Malformed("truncated ClientHello")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, n: int) -> _Reader:
        return _Reader(self.take(self.number(n)))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if r.done:
        return ClientHello(None)  # no extensions at all (TLS 1.2 allows it)
    extensions = r.vector(2)
    while not extensions.done:
        kind, data = extensions.number(2), extensions.vector(2)
        if kind == EXT_SERVER_NAME:
            server_name = _server_name(data)
        elif kind == EXT_ALPN:
            alpn = _alpn(data)
    return ClientHello(server_name, alpn)


def _server_name(ext: _Reader) -> str | None:
    names = ext.vector(2)
    while not names.done:
        kind, name = names.number(1), names.vector(2).data
        if kind == 0:  # host_name; RFC 6066: at most one, ASCII (A-labels), no trailing dot
            try:
                return name.decode("ascii").lower().rstrip(".") or None
            except UnicodeDecodeError:
                raise _Malformed("server name is not ASCII") from None
    return None


def _alpn(ext: _Reader) -> tuple[str, ...]:
    names = ext.vector(2)
    out = []
    while not names.done:
        out.append(names.vector(1).data.decode("latin-1"))
    return tuple(out)
