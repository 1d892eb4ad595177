"""backend-protocol HTTPS tuning: proxy-ssl-protocols, proxy-ssl-ciphers, proxy-ssl-verify-depth (trustme pods)."""

from __future__ import annotations

import asyncio
import ssl

import trustme
from harness import EchoBackend, async_test
from tls_harness import POD_CA, app, compile_docs, secret, tls_proxy

POD_LEAF = POD_CA.issue_cert("web.default.svc")
INTERMEDIATE = POD_CA.create_child_ca()
DEEP_LEAF = INTERMEDIATE.issue_cert("web.default.svc")  # pod -> intermediate -> POD_CA: depth 1


async def pod(leaf: trustme.LeafCert, *, max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
              ciphers: str = "") -> EchoBackend:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    leaf.configure_cert(ctx)
    backend = EchoBackend("pod-tls")
    backend._server = await asyncio.start_server(backend._serve, "127.0.0.1", 0, ssl=ctx, limit=1 << 20)
    backend.port = backend._server.sockets[0].getsockname()[1]
    return backend


async def status(port: int, **notes: str) -> int:
    annotations = {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                   **{f"nginx.ingress.kubernetes.io/{k.replace('_', '-')}": v for k, v in notes.items()}}
    docs = [secret("pod-ca", ca=POD_CA), *app("web", ["web.example.com"], port, annotations=annotations)]
    async with tls_proxy(compile_docs(docs)) as proxy, await proxy.plain() as client:
        return (await client.request("GET", "/", host="web.example.com")).status


@async_test
async def test_proxy_ssl_protocols_limit_the_versions_offered_to_the_pod() -> None:
    tls12_pod = await pod(POD_LEAF, max_version=ssl.TLSVersion.TLSv1_2)
    try:
        assert await status(tls12_pod.port, proxy_ssl_protocols="TLSv1.3") == 502
        assert await status(tls12_pod.port, proxy_ssl_protocols="TLSv1 TLSv1.1 TLSv1.2") == 200
        assert await status(tls12_pod.port) == 200
    finally:
        await tls12_pod.close()


@async_test
async def test_proxy_ssl_ciphers_are_the_ones_offered_to_the_pod() -> None:
    chacha_pod = await pod(POD_LEAF, max_version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
    try:
        assert await status(chacha_pod.port, proxy_ssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256") == 502
        assert await status(chacha_pod.port, proxy_ssl_ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:HIGH") == 200
    finally:
        await chacha_pod.close()


@async_test
async def test_proxy_ssl_verify_depth_bounds_the_pods_chain() -> None:
    deep = await pod(DEEP_LEAF)
    shallow = await pod(POD_LEAF)
    verify = {"proxy_ssl_verify": "on", "proxy_ssl_secret": "default/pod-ca"}
    try:
        assert await status(deep.port, **verify, proxy_ssl_verify_depth="0") == 502  # one intermediate: too deep
        assert await status(deep.port, **verify) == 200  # nginx's default depth 1 allows one intermediate
        assert await status(shallow.port, **verify, proxy_ssl_verify_depth="0") == 200
        assert await status(deep.port, proxy_ssl_verify_depth="0") == 200  # not verifying: depth is moot
    finally:
        await deep.close()
        await shallow.close()
