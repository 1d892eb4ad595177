"""The PROXY protocol (HAProxy, versions 1 and 2): a header a proxy sends before the stream it relays, carrying
the original client and destination addresses. Pure functions on bytes: no sockets, no clock.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. What we accept:
- v1 (text): `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`, at most 107 bytes with the CRLF, single spaces,
  addresses in their family's canonical text form, ports 0..65535; `PROXY UNKNOWN ...\\r\\n` means "use the
  connection's own addresses" and parses as a `local` header;
- v2 (binary): the 12-byte signature, version 2, command LOCAL (a health check by the proxy itself: `local`)
  or PROXY, family INET or INET6 over STREAM; UNSPEC and UNIX families carry nothing we can use and parse as
  `local` (the spec lets a receiver ignore them); TLVs after the addresses are skipped; the payload is bounded
  by `max_v2_payload` (4 KiB by default, room for the TLVs AWS, GCP and Azure load balancers add).

`parse(buffer)` returns None while the buffer is a proper prefix of a header that may still be valid (the
caller reads more; the caller's timeout bounds the wait), `(ProxyHeader, consumed)` once a whole header is
there (the bytes after `consumed` are the relayed stream), and raises `ProxyProtocolError` as soon as the bytes
cannot be the start of a valid header: a malformed header closes the connection, it is never guessed at.

`encode_v1` / `encode_v2` build headers for our own upstream connections. If the two addresses are of different
families the IPv4 one is written as IPv4-mapped IPv6 (as HAProxy does), since a header has one family.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the spec's worst case: "PROXY TCP6 " + 2 x 39 + 2 x 5 + 3 spaces + CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16  # signature, version/command, family/transport, payload length
MAX_V2_PAYLOAD = 4096

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_T_UNSPEC, _T_STREAM, _T_DGRAM = 0x0, 0x1, 0x2
_INET_PAYLOAD = struct.Struct("!4s4sHH")  # 12 bytes
_INET6_PAYLOAD = struct.Struct("!16s16sHH")  # 36 bytes
_V2_FIXED = struct.Struct("!12sBBH")


class ProxyProtocolError(ValueError):
    """The peer sent bytes that are not a valid PROXY protocol header: the peer's fault, close the connection."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """The addresses a PROXY header carries. `local`: the header carries none (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC
    or UNIX family): use the connection's own addresses. Addresses are canonical text ("::1", "10.0.0.1")."""

    source_addr: str
    source_port: int
    dest_addr: str
    dest_port: int
    local: bool = False


LOCAL = ProxyHeader("", 0, "", 0, local=True)


def parse(buffer: bytes, max_v2_payload: int = MAX_V2_PAYLOAD) -> tuple[ProxyHeader, int] | None:
    """(header, bytes consumed), or None when more bytes are needed; raises ProxyProtocolError."""
    if buffer[:12] == V2_SIGNATURE:
        return _parse_v2(buffer, max_v2_payload)
    if buffer[:6] == V1_PREFIX:
        return _parse_v1(buffer)
    n = len(buffer)
    if n < 12 and (V2_SIGNATURE.startswith(buffer) or (n < 6 and V1_PREFIX.startswith(buffer))):
        return None
    raise ProxyProtocolError("no PROXY protocol signature")


def _parse_v1(buffer: bytes) -> tuple[ProxyHeader, int] | None:
    end = buffer.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(buffer) >= V1_MAX_LENGTH:
            raise ProxyProtocolError("v1 header longer than 107 bytes")
        return None
    if buffer[end - 1:end] != b"\r":
        raise ProxyProtocolError("v1 header not terminated by CRLF")
    line = buffer[6:end - 1]
    if line.startswith(b"UNKNOWN"):  # the rest of the line is to be ignored (spec 2.1)
        return LOCAL, end + 1
    parts = line.split(b" ")
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("v1 header: expected TCP4|TCP6 <src> <dst> <sport> <dport>")
    version = 4 if parts[0] == b"TCP4" else 6
    src, dst = _v1_address(parts[1], version), _v1_address(parts[2], version)
    return ProxyHeader(src, _v1_port(parts[3]), dst, _v1_port(parts[4])), end + 1


def _v1_address(text: bytes, version: int) -> str:
    try:
        if b"%" in text:  # a scope id ("fe80::1%eth0") means nothing to us
            raise ValueError
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"v1 header: bad address {text!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"v1 header: {text!r} is not an IPv{version} address")
    return str(address)


def _v1_port(text: bytes) -> int:
    # decimal digits only: int() would also take "+1", " 1" and "1_0"
    if not (0 < len(text) <= 5 and text.isdigit()) or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyProtocolError(f"v1 header: bad port {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"v1 header: port {port} out of range")
    return port


def _parse_v2(buffer: bytes, max_payload: int) -> tuple[ProxyHeader, int] | None:
    if len(buffer) < V2_HEADER_LENGTH:
        return None
    _, version_command, family_transport, length = _V2_FIXED.unpack_from(buffer)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"v2 header: version {version_command >> 4}")
    command, family, transport = version_command & 0xF, family_transport >> 4, family_transport & 0xF
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError(f"v2 header: unknown command {command}")
    if family > _AF_UNIX or transport > _T_DGRAM:
        raise ProxyProtocolError(f"v2 header: unknown family/transport 0x{family_transport:02x}")
    if length > max_payload:
        raise ProxyProtocolError(f"v2 header: payload of {length} bytes (limit {max_payload})")
    total = V2_HEADER_LENGTH + length
    if len(buffer) < total:
        return None
    if command == _V2_LOCAL or family in (_AF_UNSPEC, _AF_UNIX):
        return LOCAL, total  # addresses (if any) and TLVs skipped
    if transport != _T_STREAM:
        raise ProxyProtocolError("v2 header: not a stream (TCP) connection")
    layout = _INET_PAYLOAD if family == _AF_INET else _INET6_PAYLOAD
    if length < layout.size:
        raise ProxyProtocolError(f"v2 header: {length} bytes cannot hold the addresses")
    src, dst, sport, dport = layout.unpack_from(buffer, V2_HEADER_LENGTH)
    return ProxyHeader(_packed(src), sport, _packed(dst), dport), total


def _packed(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def encode_v1(src: str, sport: int, dst: str, dport: int) -> bytes:
    """`PROXY TCP4|TCP6 src dst sport dport\\r\\n`."""
    source, dest = _same_family(src, dst)
    family = b"TCP4" if source.version == 4 else b"TCP6"
    return b"PROXY %s %s %s %d %d\r\n" % (family, str(source).encode(), str(dest).encode(),
                                          _port(sport), _port(dport))


def encode_v1_unknown() -> bytes:
    return b"PROXY UNKNOWN\r\n"


def encode_v2(src: str, sport: int, dst: str, dport: int, *, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY-command header over TCP; `tlvs` (already encoded type-length-value records) are appended."""
    source, dest = _same_family(src, dst)
    if source.version == 4:
        family, payload = _AF_INET, _INET_PAYLOAD.pack(source.packed, dest.packed, _port(sport), _port(dport))
    else:
        family, payload = _AF_INET6, _INET6_PAYLOAD.pack(source.packed, dest.packed, _port(sport), _port(dport))
    return _v2(_V2_PROXY, family << 4 | _T_STREAM, payload + tlvs)


def encode_v2_local() -> bytes:
    """A v2 LOCAL header: a connection of the proxy's own (health check), no addresses."""
    return _v2(_V2_LOCAL, _AF_UNSPEC << 4 | _T_UNSPEC, b"")


def _v2(command: int, family_transport: int, payload: bytes) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError("PROXY v2 payload longer than 65535 bytes")
    return _V2_FIXED.pack(V2_SIGNATURE, 0x20 | command, family_transport, len(payload)) + payload


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _same_family(src: str, dst: str) -> tuple[IPAddress, IPAddress]:
    source, dest = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if source.version == dest.version:
        return source, dest
    return _as_v6(source), _as_v6(dest)


def _as_v6(address: IPAddress) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)


def _port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return port
