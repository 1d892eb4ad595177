"""runtime.client_hello: SNI and ALPN from a ClientHello, for any split of the bytes, and garbage refused."""

from __future__ import annotations

import contextlib
import ssl

from hypothesis import given
from hypothesis import strategies as st

from pyngress.runtime.client_hello import (
    MAX_HELLO,
    ClientHello,
    Incomplete,
    NotClientHello,
    parse_client_hello,
)


def client_hello(server_name: str | None, alpn: list[str] | None = None,
                 maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> bytes:
    """The bytes Python's own TLS client sends first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


HELLO = client_hello("Shop.Example.com", ["h2", "http/1.1"])


def test_server_name_and_alpn() -> None:
    assert parse_client_hello(HELLO) == ClientHello("shop.example.com", ("h2", "http/1.1"))
    assert parse_client_hello(client_hello("a.example.com", maximum=ssl.TLSVersion.TLSv1_2)) == \
        ClientHello("a.example.com")


def test_no_sni() -> None:
    assert parse_client_hello(client_hello(None)) == ClientHello(None)


def test_every_prefix_asks_for_more_and_says_how_much() -> None:
    for n in range(len(HELLO)):
        parsed = parse_client_hello(HELLO[:n])
        assert isinstance(parsed, Incomplete), n
        assert n < parsed.needed <= len(HELLO)


def test_handshake_split_over_two_records() -> None:
    body = HELLO[5:]
    first, second = body[:40], body[40:]
    records = (b"\x16\x03\x01" + len(first).to_bytes(2, "big") + first
               + b"\x16\x03\x01" + len(second).to_bytes(2, "big") + second)
    assert parse_client_hello(records) == ClientHello("shop.example.com", ("h2", "http/1.1"))
    assert isinstance(parse_client_hello(records[:50]), Incomplete)


def test_bytes_after_the_hello_are_ignored() -> None:
    expected = ClientHello("shop.example.com", ("h2", "http/1.1"))
    assert parse_client_hello(HELLO + b"\x17\x03\x03garbage") == expected


def test_plain_http_and_other_records_are_not_a_hello() -> None:
    assert isinstance(parse_client_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), NotClientHello)
    assert isinstance(parse_client_hello(b"\x17\x03\x03\x00\x05hello"), NotClientHello)  # application data
    assert isinstance(parse_client_hello(b"\x16\x03\x01\x00\x00"), NotClientHello)  # empty record
    server_hello = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"
    assert isinstance(parse_client_hello(server_hello), NotClientHello)


def test_oversized_hello_is_refused_without_waiting_for_it() -> None:
    big = (MAX_HELLO + 1).to_bytes(3, "big")
    record = b"\x16\x03\x01\x00\x04\x01" + big
    assert isinstance(parse_client_hello(record), NotClientHello)
    assert isinstance(parse_client_hello(b"\x16\x03\x01\x40\x00"), Incomplete)  # one full record is fine
    assert isinstance(parse_client_hello(b"\x16\x03\x01\xff\xff"), NotClientHello)  # over 2^14: not TLS


def test_truncated_inner_lengths_are_malformed_not_a_crash() -> None:
    body = HELLO[9:9 + 60]  # a hello whose handshake length ends inside its cipher suites
    size = len(body).to_bytes(3, "big")
    record = b"\x16\x03\x01" + (len(body) + 4).to_bytes(2, "big") + b"\x01" + size + bytes(body)
    parsed = parse_client_hello(record)
    assert isinstance(parsed, NotClientHello) and "truncated" in parsed.reason


def test_non_ascii_server_name_is_malformed() -> None:
    hello = client_hello("shop.example.com")
    at = hello.find(b"shop.example.com")
    assert at > 0
    broken = hello[:at] + b"\xff" + hello[at + 1 :]
    assert isinstance(parse_client_hello(broken), NotClientHello)


@given(st.binary(max_size=600))
def test_never_raises_on_garbage(data: bytes) -> None:
    assert isinstance(parse_client_hello(data), ClientHello | Incomplete | NotClientHello)


@given(st.integers(min_value=0, max_value=len(HELLO)), st.binary(max_size=40))
def test_never_raises_on_mangled_hellos(at: int, noise: bytes) -> None:
    data = HELLO[:at] + noise + HELLO[at + len(noise):]
    assert isinstance(parse_client_hello(data), ClientHello | Incomplete | NotClientHello)
