"""Header handling: hop-by-hop removal both ways, Host, X-Forwarded-*, X-Real-IP, X-Request-ID."""

from __future__ import annotations

import re

from harness import async_test, stack

from pyngress.model import ProxySettings


@async_test
async def test_hop_by_hop_request_headers_are_not_forwarded() -> None:
    hop = [("Connection", "close, X-Custom"), ("X-Custom", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
           ("Trailer", "X-Checksum"), ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"),
           ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("X-End-To-End", "kept")]
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/hop", hop, host="app.test:8080")
        assert resp.status == 200
    got = s.backend.requests[0]
    for name in ("Connection", "X-Custom", "Keep-Alive", "TE", "Trailer", "Upgrade", "Proxy-Connection",
                 "Proxy-Authorization"):
        assert got.header(name) is None, f"{name} was forwarded"
    assert got.header("X-End-To-End") == "kept"
    assert got.header("Host") == "app.test:8080"
    assert [n for n, _ in got.headers].count("Host") == 1


@async_test
async def test_untrusted_client_cannot_set_forwarded_headers() -> None:
    spoofed = [("X-Forwarded-For", "1.2.3.4"), ("X-Real-IP", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", "evil.test"), ("X-Forwarded-Port", "443")]
    async with stack() as s, await s.proxy.client() as c:
        await c.request("GET", "/", spoofed, host="app.test")
        got = s.backend.requests[0]
        assert got.header("X-Forwarded-For") == "127.0.0.1"
        assert got.header("X-Real-IP") == "127.0.0.1"
        assert got.header("X-Forwarded-Proto") == "http"
        assert got.header("X-Forwarded-Host") == "app.test"
        assert got.header("X-Forwarded-Port") == str(s.proxy.port)


@async_test
async def test_trusted_proxy_forwarded_for_is_extended_and_gives_real_ip() -> None:
    settings = ProxySettings(use_forwarded_headers=True, trusted_proxies=("127.0.0.0/8",))
    async with stack(settings=settings) as s, await s.proxy.client() as c:
        await c.request("GET", "/", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
        got = s.backend.requests[0]
        assert got.header("X-Forwarded-For") == "1.2.3.4, 127.0.0.1"
        assert got.header("X-Real-IP") == "1.2.3.4"
        assert got.header("X-Forwarded-Proto") == "https"


@async_test
async def test_real_ip_is_the_rightmost_address_that_is_not_a_trusted_proxy() -> None:
    settings = ProxySettings(use_forwarded_headers=True, trusted_proxies=("127.0.0.0/8", "10.0.0.0/8"))
    async with stack(settings=settings) as s, await s.proxy.client() as c:
        await c.request("GET", "/", [("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.1.1.1")])
        got = s.backend.requests[0]
        assert got.header("X-Forwarded-For") == "6.6.6.6, 1.2.3.4, 10.1.1.1, 127.0.0.1"
        assert got.header("X-Real-IP") == "1.2.3.4"


@async_test
async def test_trusted_cidr_alone_does_not_trust_forwarded_headers() -> None:
    # as ingress-nginx: proxy-real-ip-cidr only counts together with use-forwarded-headers
    settings = ProxySettings(trusted_proxies=("127.0.0.0/8",))
    async with stack(settings=settings) as s, await s.proxy.client() as c:
        await c.request("GET", "/", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
        got = s.backend.requests[0]
        assert got.header("X-Forwarded-For") == "127.0.0.1"
        assert got.header("X-Forwarded-Proto") == "http"


@async_test
async def test_peer_outside_trusted_cidrs_is_not_trusted() -> None:
    settings = ProxySettings(use_forwarded_headers=True, trusted_proxies=("10.0.0.0/8",))
    async with stack(settings=settings) as s, await s.proxy.client() as c:
        await c.request("GET", "/", [("X-Forwarded-For", "1.2.3.4")])
        got = s.backend.requests[0]
        assert got.header("X-Forwarded-For") == "127.0.0.1"
        assert got.header("X-Real-IP") == "127.0.0.1"


@async_test
async def test_underscore_variant_of_forwarded_for_is_not_passed_to_backend() -> None:
    # CGI-style backends (WSGI, PHP-FPM) read X_Forwarded_For and X-Forwarded-For as one variable
    # HTTP_X_FORWARDED_FOR: forwarding the underscore form lets an untrusted client spoof its address.
    # ingress-nginx drops header names with underscores by default (enable-underscores-in-headers: false).
    async with stack() as s, await s.proxy.client() as c:
        await c.request("GET", "/", [("X_Forwarded_For", "1.2.3.4")])
        got = s.backend.requests[0]
        assert got.header("X-Forwarded-For") == "127.0.0.1"
        assert [n for n, _ in got.headers if n.upper().replace("-", "_") == "X_FORWARDED_FOR"] == [
            "X-Forwarded-For"]


@async_test
async def test_request_id_is_generated_when_absent_and_passed_through_when_present() -> None:
    async with stack() as s, await s.proxy.client() as c:
        await c.request("GET", "/one")
        await c.request("GET", "/two")
        await c.request("GET", "/three", [("X-Request-ID", "abc-123")])
    first, second, third = (r.header("X-Request-ID") for r in s.backend.requests)
    assert first and re.fullmatch(r"[0-9a-f]{32}", first)
    assert second and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second
    assert third == "abc-123"


@async_test
async def test_hop_by_hop_response_headers_are_not_passed_to_client() -> None:
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/hop-response")
        assert resp.status == 200
        assert resp.header("Keep-Alive") is None
        assert resp.header("Connection") in (None, "keep-alive")  # ours, not the backend's "keep-alive, X-Hop"
        assert resp.header("X-End-To-End") == "1"


@async_test
async def test_response_header_named_in_backend_connection_header_is_not_passed_to_client() -> None:
    # RFC 9110 7.6.1: a proxy removes the fields the Connection header names, in responses too.
    async with stack() as s, await s.proxy.client() as c:
        resp = await c.request("GET", "/hop-response")
        assert resp.header("X-Hop") is None


@async_test
async def test_request_id_is_not_generated_when_generate_request_id_is_false() -> None:
    async with stack(settings=ProxySettings(generate_request_id=False)) as s, await s.proxy.client() as c:
        await c.request("GET", "/none")
        await c.request("GET", "/given", [("X-Request-ID", "abc-123")])
        assert s.backend.requests[0].header("X-Request-ID") is None
        assert s.backend.requests[1].header("X-Request-ID") == "abc-123"


@async_test
async def test_response_trailers_are_dropped_and_never_reach_the_next_response() -> None:
    # the trailer fields of a chunked response must not be kept for the next response on the pooled
    # upstream connection (which may belong to another client)
    async with stack() as s, await s.proxy.client() as c:
        first = await c.request("GET", "/trailers")
        assert first.status == 200 and first.body == b"hello"
        second = await c.request("GET", "/next")
        assert first.header("X-Checksum") is None
        assert second.header("X-Checksum") is None
        assert s.backend.connections == 1  # both went over the same pooled connection
