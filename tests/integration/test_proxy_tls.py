"""TLS termination end to end with real TLS (trustme): SNI selection, invalid Secrets isolated, Secret rotation."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

import trustme
from harness import EchoBackend, async_test, pattern, sha256
from tls_harness import CA, app, compile_docs, der, secret, tls_proxy

from pyngress.model import Snapshot
from pyngress.runtime.tls_contexts import FAKE_CN

EXACT = CA.issue_cert("a.example.com")
WILDCARD = CA.issue_cert("*.example.com")


@contextlib.asynccontextmanager
async def pods(*names: str) -> AsyncIterator[list[EchoBackend]]:
    started = [await EchoBackend.start(n) for n in names]
    try:
        yield started
    finally:
        for b in started:
            await b.close()


@async_test
async def test_sni_picks_exact_then_wildcard_then_default() -> None:
    async with pods("a", "b") as (a, b):
        snap = compile_docs([secret("exact", EXACT), secret("wild", WILDCARD),
                             *app("a", ["a.example.com"], a.port, tls=[(["a.example.com"], "exact")]),
                             *app("b", ["b.example.com"], b.port, tls=[(["*.example.com"], "wild")])])
        async with tls_proxy(snap) as proxy:
            for name, expected in (("a.example.com", der(EXACT)), ("b.example.com", der(WILDCARD)),
                                   ("zz.example.com", der(WILDCARD))):
                async with await proxy.tls(name) as client:
                    assert client.peer_der == expected, name
            for name in ("x.y.example.com", "other.org", None):  # wildcard is one label; no SNI: default
                async with await proxy.tls(name) as client:
                    assert client.peer_cn == FAKE_CN, name


@async_test
async def test_sni_decides_the_certificate_and_host_the_route() -> None:
    async with pods("a", "b") as (a, b):
        snap = compile_docs([secret("exact", EXACT), secret("wild", WILDCARD),
                             *app("a", ["a.example.com"], a.port, tls=[(["a.example.com"], "exact")]),
                             *app("b", ["b.example.com"], b.port, tls=[(["*.example.com"], "wild")])])
        async with tls_proxy(snap) as proxy, await proxy.tls("a.example.com") as client:
            assert client.peer_der == der(EXACT)
            resp = await client.request("GET", "/x?y=1", host="b.example.com")
            assert resp.status == 200 and resp.json()["pod"] == "b"
            # keep-alive over TLS, and the backend is told the scheme
            resp = await client.request("GET", "/", host="a.example.com")
            assert resp.json()["pod"] == "a"
            headers = resp.json()["headers"]
            assert headers["x-forwarded-proto"] == "https"
            assert headers["x-forwarded-port"] == str(proxy.https_port)
            assert client.alpn == "http/1.1"


@async_test
async def test_invalid_secret_falls_back_to_default_and_others_keep_theirs() -> None:
    other = CA.issue_cert("other.example.com")
    async with pods("a", "b") as (a, b):
        snap = compile_docs([secret("broken", EXACT, key=other.private_key_pem.bytes()), secret("good", WILDCARD),
                             *app("a", ["a.example.com"], a.port, tls=[(["a.example.com"], "broken")]),
                             *app("b", ["b.example.com"], b.port, tls=[(["b.example.com"], "good")])])
        [problem] = [p for p in snap.problems if p.kind == "Secret"]
        assert problem.name == "broken" and "does not belong" in problem.message
        async with tls_proxy(snap) as proxy:
            async with await proxy.tls("a.example.com") as client:
                assert client.peer_cn == FAKE_CN
                assert (await client.request("GET", "/", host="a.example.com")).json()["pod"] == "a"
            async with await proxy.tls("b.example.com") as client:
                assert client.peer_der == der(WILDCARD)


@async_test
async def test_secret_rotation_on_reload_keeps_open_connections() -> None:
    rotated = CA.issue_cert("a.example.com")
    async with pods("a") as (a,):
        def config(leaf: trustme.LeafCert, version: int) -> Snapshot:
            return compile_docs([secret("cert", leaf),
                                 *app("a", ["a.example.com"], a.port, tls=[(["a.example.com"], "cert")])],
                                version=version)

        async with tls_proxy(config(EXACT, 1)) as proxy, await proxy.tls("a.example.com") as old:
            assert old.peer_der == der(EXACT)
            assert (await old.request("GET", "/", host="a.example.com")).status == 200
            proxy.server.install(config(rotated, 2))
            async with await proxy.tls("a.example.com") as new:
                assert new.peer_der == der(rotated)
                assert (await new.request("GET", "/", host="a.example.com")).status == 200
            # the connection made before the reload still works, on its old session
            assert (await old.request("GET", "/again", host="a.example.com")).status == 200
            assert a.requests[-1].target == "/again"


@async_test
async def test_default_ssl_certificate_replaces_the_fake() -> None:
    async with pods("a") as (a,):
        snap = compile_docs([secret("default-cert", WILDCARD), *app("a", ["a.example.com"], a.port)],
                            default_ssl_certificate="default/default-cert")
        async with tls_proxy(snap) as proxy, await proxy.tls(None) as client:
            assert client.peer_der == der(WILDCARD)
            assert (await client.request("GET", "/", host="a.example.com")).json()["pod"] == "a"


@async_test
async def test_tls_1_2_and_1_3_are_both_served() -> None:
    async with pods("a") as (a,):
        snap = compile_docs(app("a", ["a.example.com"], a.port))
        async with tls_proxy(snap) as proxy:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            async with await proxy.tls("a.example.com", ctx=ctx) as client:
                assert client.writer.get_extra_info("ssl_object").version() == "TLSv1.3"
            ctx12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx12.check_hostname, ctx12.verify_mode = False, ssl.CERT_NONE
            ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
            async with await proxy.tls("a.example.com", ctx=ctx12) as client:
                assert client.writer.get_extra_info("ssl_object").version() == "TLSv1.2"


def _resumed_get(port: int, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
    """One blocking HTTPS request offering `session`: (was it resumed, the session to offer next time)."""
    ctx = RESUMING
    with socket.create_connection(("127.0.0.1", port), 5) as raw, \
            ctx.wrap_socket(raw, server_hostname="a.example.com", session=session) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
        while tls.recv(65536):  # reading also takes the TLS 1.3 tickets the server sends
            pass
        return tls.session_reused, tls.session


RESUMING = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
RESUMING.check_hostname, RESUMING.verify_mode = False, ssl.CERT_NONE


@async_test
async def test_sessions_resume_also_across_a_reload_that_keeps_the_certificate() -> None:
    async with pods("a") as (a,):
        def config(version: int) -> Snapshot:
            return compile_docs([secret("exact", EXACT),
                                 *app("a", ["a.example.com"], a.port, tls=[(["a.example.com"], "exact")])],
                                version=version)

        async with tls_proxy(config(1)) as proxy:
            loop = asyncio.get_running_loop()
            resumed, session = await loop.run_in_executor(None, _resumed_get, proxy.https_port, None)
            assert not resumed and session is not None
            resumed, session = await loop.run_in_executor(None, _resumed_get, proxy.https_port, session)
            assert resumed
            proxy.server.install(config(2))  # e.g. an unrelated Ingress changed
            resumed, _ = await loop.run_in_executor(None, _resumed_get, proxy.https_port, session)
            assert resumed


@async_test
async def test_large_bodies_and_pipelined_requests_over_tls() -> None:
    """The TLS read path lends uvloop one shared buffer (https_listener._AlpnSwitch): bodies larger than it,
    and several requests in one TLS record, arrive intact and in order."""
    backend = await EchoBackend.start("a")
    leaf = CA.issue_cert("big.example.com")
    try:
        docs = [secret("big", leaf),
                *app("a", ["big.example.com"], backend.port, tls=[(["big.example.com"], "big")])]
        async with tls_proxy(compile_docs(docs)) as proxy, await proxy.tls("big.example.com") as client:
            upload = pattern(3 << 20)
            resp = await client.request("POST", "/up", host="big.example.com", body=upload)
            assert resp.status == 200 and resp.json()["body_sha256"] == sha256(upload)
            download = await client.request("GET", "/bytes/2000000", host="big.example.com")
            assert download.body == pattern(2000000)
            await client.send(b"".join(b"GET /p%d HTTP/1.1\r\nHost: big.example.com\r\n\r\n" % i
                                       for i in range(5)))
            paths = [(await client.response()).json()["path"] for _ in range(5)]
            assert paths == [f"/p{i}" for i in range(5)]
    finally:
        await backend.close()
