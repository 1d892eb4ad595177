"""TLS towards the pods: backend-protocol HTTPS (verify off / on with a CA Secret), and ssl-passthrough."""

from __future__ import annotations

import asyncio
import contextlib

from harness import EchoBackend, async_test
from tls_harness import CA, POD_CA, app, compile_docs, der, secret, tls_echo, tls_proxy

POD_LEAF = POD_CA.issue_cert("web.default.svc")  # a pod's own certificate, from the cluster's CA
PASS_LEAF = POD_CA.issue_cert("secure.example.com")


def https_backend(port: int, **notes: str) -> list[dict[str, object]]:
    annotations = {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                   **{f"nginx.ingress.kubernetes.io/{k.replace('_', '-')}": v for k, v in notes.items()}}
    return app("web", ["web.example.com"], port, annotations=annotations)


@async_test
async def test_backend_https_without_verification() -> None:
    pod = await tls_echo("pod-tls", POD_LEAF)
    try:
        async with tls_proxy(compile_docs(https_backend(pod.port))) as proxy, await proxy.plain() as client:
            for i in range(3):  # the re-encrypted upstream connection is pooled and reused
                resp = await client.request("GET", f"/r{i}", host="web.example.com")
                assert resp.status == 200 and resp.json()["pod"] == "pod-tls"
            assert pod.connections == 1
    finally:
        await pod.close()


@async_test
async def test_backend_https_verified_against_the_ca_secret() -> None:
    pod = await tls_echo("pod-tls", POD_LEAF)
    try:
        good = compile_docs([secret("pod-ca", ca=POD_CA), *https_backend(
            pod.port, proxy_ssl_verify="on", proxy_ssl_secret="default/pod-ca", proxy_ssl_server_name="on")])
        async with tls_proxy(good) as proxy, await proxy.plain() as client:
            assert (await client.request("GET", "/", host="web.example.com")).status == 200
        wrong_ca = compile_docs([secret("pod-ca", ca=CA), *https_backend(
            pod.port, proxy_ssl_verify="on", proxy_ssl_secret="default/pod-ca")])
        async with tls_proxy(wrong_ca) as proxy, await proxy.plain() as client:
            assert (await client.request("GET", "/", host="web.example.com")).status == 502
        wrong_name = compile_docs([secret("pod-ca", ca=POD_CA), *https_backend(
            pod.port, proxy_ssl_verify="on", proxy_ssl_secret="default/pod-ca", proxy_ssl_name="other.svc")])
        async with tls_proxy(wrong_name) as proxy, await proxy.plain() as client:
            assert (await client.request("GET", "/", host="web.example.com")).status == 502
        assert len(pod.requests) == 1  # only the verified connection carried a request
    finally:
        await pod.close()


@async_test
async def test_ssl_passthrough_relays_tls_to_the_pod_and_terminates_other_hosts() -> None:
    pod = await tls_echo("secure-pod", PASS_LEAF)
    web = await EchoBackend.start("web-pod")
    proxy_leaf = CA.issue_cert("www.example.com")
    try:
        docs = [*app("secure", ["secure.example.com"], pod.port,
                     annotations={"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}),
                secret("www", proxy_leaf), *app("web", ["www.example.com"], web.port,
                                               tls=[(["www.example.com"], "www")])]
        async with tls_proxy(compile_docs(docs)) as proxy:
            async with await proxy.tls("secure.example.com") as client:
                assert client.peer_der == der(PASS_LEAF)  # the pod's own certificate: not terminated by us
                for _ in range(2):
                    resp = await client.request("GET", "/inside", host="secure.example.com")
                    assert resp.status == 200 and resp.json()["pod"] == "secure-pod"
                    assert "x-forwarded-for" not in resp.json()["headers"]  # raw bytes: we added nothing
            async with await proxy.tls("www.example.com") as client:
                assert client.peer_der == der(proxy_leaf)
                assert (await client.request("GET", "/", host="www.example.com")).json()["pod"] == "web-pod"
            async with await proxy.tls(None) as client:  # no SNI: terminated with the default
                assert (await client.request("GET", "/", host="www.example.com")).json()["pod"] == "web-pod"
    finally:
        await pod.close()
        await web.close()


@async_test
async def test_passthrough_relay_is_closed_on_drain() -> None:
    pod = await tls_echo("secure-pod", PASS_LEAF)
    try:
        docs = app("secure", ["secure.example.com"], pod.port,
                   annotations={"pyngress.io/ssl-passthrough": "true"})
        async with tls_proxy(compile_docs(docs)) as proxy:
            client = await proxy.tls("secure.example.com")
            assert (await client.request("GET", "/", host="secure.example.com")).status == 200
            assert len(proxy.server.https.relays) == 1  # type: ignore[union-attr]
            await proxy.server.drain(0.1)
            assert await client.at_eof()
            await client.close()
    finally:
        await pod.close()


async def handshake_in_pieces(port: int, server_name: str, split: int) -> tuple[bytes, asyncio.StreamWriter]:
    """A TLS handshake whose ClientHello leaves in two writes, `split` bytes first, the rest a moment later:
    what a ClientHello over two TCP segments looks like to the listener. Returns the server's certificate."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    writer.write(hello[:split])
    await writer.drain()
    await asyncio.sleep(0.05)  # not synchronisation: the gap that makes the listener see half a hello
    writer.write(hello[split:])
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            data = await asyncio.wait_for(reader.read(65536), 5.0)
            assert data, "closed during the handshake"
            incoming.write(data)
    writer.write(outgoing.read())
    return tls.getpeercert(binary_form=True), writer


@async_test
async def test_passthrough_listener_waits_for_a_fragmented_client_hello() -> None:
    pod = await tls_echo("secure-pod", PASS_LEAF)
    web = await EchoBackend.start("web-pod")
    proxy_leaf = CA.issue_cert("www.example.com")
    try:
        docs = [*app("secure", ["secure.example.com"], pod.port,
                     annotations={"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}),
                secret("www", proxy_leaf), *app("web", ["www.example.com"], web.port,
                                               tls=[(["www.example.com"], "www")])]
        async with tls_proxy(compile_docs(docs)) as proxy:
            for name, leaf, split in (("secure.example.com", PASS_LEAF, 3), ("secure.example.com", PASS_LEAF, 100),
                                      ("www.example.com", proxy_leaf, 7)):
                cert, writer = await handshake_in_pieces(proxy.https_port, name, split)
                assert cert == der(leaf), (name, split)
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    finally:
        await pod.close()
        await web.close()


@async_test
async def test_plain_http_on_the_https_port_is_closed() -> None:
    web = await EchoBackend.start("web-pod")
    try:
        for notes in ({}, {"pyngress.io/ssl-passthrough": "true"}):  # with and without peeking
            async with tls_proxy(compile_docs(app("web", ["www.example.com"], web.port, annotations=notes))) \
                    as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.https_port)
                writer.write(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
                rest = await asyncio.wait_for(reader.read(), 5.0)
                assert b"HTTP/1.1" not in rest  # a TLS alert at most, never an HTTP answer
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        assert web.requests == []
    finally:
        await web.close()
