"""PROXY protocol codec: v1 and v2 round trips, incremental parsing, limits, and malformed input."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyngress.runtime.proxy_protocol import (
    LOCAL,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    encode_v1,
    encode_v1_unknown,
    encode_v2,
    encode_v2_local,
    parse,
)

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


def v2(version_command: int, family_transport: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return V2_SIGNATURE + struct.pack("!BBH", version_command, family_transport, n) + payload


@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
@pytest.mark.parametrize(("src", "dst"), [("192.0.2.1", "10.0.0.1"), ("2001:db8::7", "::1")])
def test_header_parses_to_its_addresses_and_length(encode, src, dst) -> None:  # type: ignore[no-untyped-def]
    header = encode(src, 51234, dst, 443)
    assert parse(header + b"GET / HTTP/1.1\r\n") == (ProxyHeader(src, 51234, dst, 443), len(header))


def test_v1_text_is_the_spec_format() -> None:
    assert encode_v1("192.0.2.1", 5, "10.0.0.1", 80) == b"PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\n"
    assert encode_v1("2001:db8:0::1", 5, "::1", 80) == b"PROXY TCP6 2001:db8::1 ::1 5 80\r\n"


def test_mixed_families_are_written_as_ipv4_mapped_ipv6() -> None:
    header, _ = parse(encode_v2("192.0.2.1", 1, "2001:db8::1", 2)) or (None, 0)
    assert header == ProxyHeader("::ffff:c000:201", 1, "2001:db8::1", 2)
    assert encode_v1("2001:db8::1", 1, "192.0.2.1", 2) == b"PROXY TCP6 2001:db8::1 ::ffff:c000:201 1 2\r\n"


@pytest.mark.parametrize("header", [encode_v1_unknown(), b"PROXY UNKNOWN 1.2.3.4 junk\r\n", encode_v2_local()])
def test_unknown_and_local_carry_no_address(header: bytes) -> None:
    assert parse(header + b"rest") == (LOCAL, len(header))


def test_v2_local_command_ignores_addresses_that_are_present() -> None:
    payload = struct.pack("!4s4sHH", bytes([1, 2, 3, 4]), bytes([5, 6, 7, 8]), 1, 2)
    assert parse(v2(0x20, 0x11, payload)) == (LOCAL, 28)


@pytest.mark.parametrize("family", [0x00, 0x31, 0x32])  # UNSPEC, UNIX stream, UNIX dgram
def test_v2_unspec_and_unix_families_parse_as_local(family: int) -> None:
    payload = b"\0" * 216 if family >> 4 == 3 else b""
    assert parse(v2(0x21, family, payload)) == (LOCAL, 16 + len(payload))


def test_v2_tlvs_are_skipped() -> None:
    tlvs = b"\x05\x00\x04abcd" + b"\x04\x00\x00"  # PP2_TYPE_UNIQUE_ID, PP2_TYPE_NOOP
    header = encode_v2("10.1.2.3", 40000, "10.0.0.1", 80, tlvs=tlvs)
    assert parse(header + b"x") == (ProxyHeader("10.1.2.3", 40000, "10.0.0.1", 80), len(header))


@given(st.one_of(st.tuples(ipv4, ports, ipv4, ports), st.tuples(ipv6, ports, ipv6, ports)),
       st.sampled_from([encode_v1, encode_v2]), st.binary(max_size=40))
def test_round_trip(addresses, encode, rest: bytes) -> None:  # type: ignore[no-untyped-def]
    src, sport, dst, dport = addresses
    header = encode(src, sport, dst, dport)
    assert parse(header + rest) == (ProxyHeader(src, sport, dst, dport), len(header))


@given(st.one_of(st.tuples(ipv4, ports, ipv4, ports), st.tuples(ipv6, ports, ipv6, ports)),
       st.sampled_from([encode_v1, encode_v2]), st.data())
def test_every_proper_prefix_asks_for_more(addresses, encode, data) -> None:  # type: ignore[no-untyped-def]
    header = encode(*addresses)
    cut = data.draw(st.integers(0, len(header) - 1))
    assert parse(header[:cut]) is None


@given(st.binary(max_size=300))
def test_garbage_is_incomplete_a_header_or_an_error_never_a_crash(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyProtocolError:
        return
    if result is not None:
        header, consumed = result
        assert 0 < consumed <= len(data)
        assert isinstance(header, ProxyHeader)


@given(st.binary(min_size=1, max_size=60))
def test_bytes_after_a_signature_prefix_never_crash(tail: bytes) -> None:
    for prefix in (b"PROXY ", b"PROXY TCP4 ", V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11"):
        try:
            result = parse(prefix + tail)
        except ProxyProtocolError:
            continue
        assert result is None or result[1] <= len(prefix + tail)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family mismatch
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",  # leading zero: ambiguous (octal?) so refused
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    b"PROXY " + b"A" * 101,  # 107 bytes and no line end
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"\r\n\r\n\x00\r\nQUI!\n",  # a v2 signature that breaks off
])
def test_malformed_v1_and_non_proxy_input_raise(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_v1_of_the_longest_spec_form_is_accepted() -> None:
    longest = b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n"
    assert len(longest) == 107
    assert parse(longest + b"x") == (LOCAL, 107)
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    tcp6 = encode_v1(full, 65535, full, 65535)
    assert parse(tcp6) is not None


_INET = struct.pack("!4s4sHH", b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 1, 2)


@pytest.mark.parametrize("data", [
    v2(0x11, 0x11, _INET),  # version 1 in the binary format
    v2(0x22, 0x11, _INET),  # command 2
    v2(0x21, 0x41, _INET),  # family 4
    v2(0x21, 0x13, _INET),  # transport 3
    v2(0x21, 0x12, _INET),  # INET over DGRAM on a TCP listener
    v2(0x21, 0x11, _INET[:11]),  # too short for two IPv4 addresses
    v2(0x21, 0x21, _INET),  # too short for IPv6
    v2(0x21, 0x11, b"", length=MAX_V2_PAYLOAD + 1),  # refused before the payload arrives
])
def test_malformed_v2_raises(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_v2_payload_limit_is_configurable() -> None:
    header = encode_v2("10.0.0.1", 1, "10.0.0.2", 2, tlvs=b"\x04\x00\x10" + b"\0" * 16)
    assert parse(header, max_v2_payload=31) is not None
    with pytest.raises(ProxyProtocolError):
        parse(header, max_v2_payload=30)


def test_v2_waits_for_the_announced_payload() -> None:
    header = encode_v2("2001:db8::1", 1, "2001:db8::2", 2, tlvs=b"\x04\x00\x03abc")
    assert parse(header[:-1]) is None
    assert parse(header) == (ProxyHeader("2001:db8::1", 1, "2001:db8::2", 2), len(header))


def test_encoders_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_v1("1.2.3.4", 70000, "1.2.3.4", 1)
    with pytest.raises(ValueError):
        encode_v2("not-an-ip", 1, "1.2.3.4", 1)
    with pytest.raises(ValueError):
        encode_v2("1.2.3.4", 1, "1.2.3.4", 1, tlvs=b"\0" * 0x10000)


def test_parsed_addresses_are_canonical() -> None:
    header, _ = parse(b"PROXY TCP6 2001:DB8:0:0::1 ::1 1 2\r\n") or (None, 0)
    assert header is not None and header.source_addr == str(ipaddress.ip_address("2001:db8::1"))
