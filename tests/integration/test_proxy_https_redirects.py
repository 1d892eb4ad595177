"""Plain HTTP to HTTPS: 308 keeping path and query, the ACME exemption, force-ssl-redirect and trust, HSTS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from harness import EchoBackend, async_test
from tls_harness import CA, TLSProxy, app, compile_docs, configmap, secret, tls_proxy

HSTS = "max-age=31536000; includeSubDomains"
LEAF = CA.issue_cert("a.example.com")


@contextlib.asynccontextmanager
async def site(*extra: dict[str, Any], annotations: dict[str, str] | None = None, tls: bool = True,
               redirect_port: int = 0) -> AsyncIterator[tuple[TLSProxy, EchoBackend]]:
    backend = await EchoBackend.start("a")
    try:
        docs = [secret("cert", LEAF), *extra,
                *app("a", ["a.example.com"], backend.port, annotations=annotations,
                     tls=[(["a.example.com"], "cert")] if tls else [])]
        async with tls_proxy(compile_docs(docs), redirect_port=redirect_port) as proxy:
            yield proxy, backend
    finally:
        await backend.close()


@async_test
async def test_plain_http_to_a_tls_host_gets_308_with_path_and_query() -> None:
    async with site() as (proxy, backend), await proxy.plain() as client:
        resp = await client.request("POST", "/cart/add?item=7&n=2", host="A.example.com:8080", body=b"x=1")
        assert resp.status == 308
        assert resp.header("location") == f"https://a.example.com:{proxy.https_port}/cart/add?item=7&n=2"
        assert backend.requests == []
        assert resp.header("strict-transport-security") is None  # never over plain HTTP


@async_test
async def test_redirect_to_port_443_has_no_port() -> None:
    async with site(redirect_port=443) as (proxy, _), await proxy.plain() as client:
        resp = await client.request("GET", "/p?q", host="a.example.com")
        assert resp.header("location") == "https://a.example.com/p?q"


@async_test
async def test_acme_challenge_is_not_redirected() -> None:
    async with site() as (proxy, _backend), await proxy.plain() as client:
        resp = await client.request("GET", "/.well-known/acme-challenge/token123", host="a.example.com")
        assert resp.status == 200 and resp.json()["path"] == "/.well-known/acme-challenge/token123"


@async_test
async def test_https_responses_carry_hsts() -> None:
    async with site() as (proxy, _), await proxy.tls("a.example.com") as client:
        resp = await client.request("GET", "/", host="a.example.com")
        assert resp.status == 200 and resp.header("strict-transport-security") == HSTS
        missing = await client.request("GET", "/status/503", host="a.example.com")
        assert missing.header("strict-transport-security") == HSTS


@async_test
async def test_hsts_keys_from_the_configmap() -> None:
    cm = configmap(**{"hsts-max-age": "600", "hsts-include-subdomains": "false", "hsts-preload": "true"})
    async with site(cm) as (proxy, _), await proxy.tls("a.example.com") as client:
        resp = await client.request("GET", "/", host="a.example.com")
        assert resp.header("strict-transport-security") == "max-age=600; preload"


@async_test
async def test_ssl_redirect_false_serves_plain_http() -> None:
    async with site(annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}) as (proxy, _), \
            await proxy.plain() as client:
        assert (await client.request("GET", "/", host="a.example.com")).status == 200


@async_test
async def test_host_without_tls_is_not_redirected() -> None:
    async with site(tls=False) as (proxy, _), await proxy.plain() as client:
        resp = await client.request("GET", "/", host="a.example.com")
        assert resp.status == 200 and resp.json()["headers"]["x-forwarded-proto"] == "http"


@async_test
async def test_force_ssl_redirect_trusts_x_forwarded_proto_only_from_trusted_proxies() -> None:
    forced = {"pyngress.io/force-ssl-redirect": "true"}
    trusted = configmap(**{"use-forwarded-headers": "true", "proxy-real-ip-cidr": "127.0.0.1/32"})
    async with site(trusted, annotations=forced, tls=False) as (proxy, _), await proxy.plain() as client:
        # a TLS-terminating load balancer in front said https: served, with HSTS
        resp = await client.request("GET", "/x?y", host="a.example.com", headers=[("X-Forwarded-Proto", "https")])
        assert resp.status == 200 and resp.header("strict-transport-security") == HSTS
        assert resp.json()["headers"]["x-forwarded-proto"] == "https"
        resp = await client.request("GET", "/x?y", host="a.example.com", headers=[("X-Forwarded-Proto", "http")])
        assert resp.status == 308 and resp.header("location") == f"https://a.example.com:{proxy.https_port}/x?y"
    untrusted = configmap(**{"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8"})
    async with site(untrusted, annotations=forced, tls=False) as (proxy, backend), await proxy.plain() as client:
        resp = await client.request("GET", "/x", host="a.example.com", headers=[("X-Forwarded-Proto", "https")])
        assert resp.status == 308 and backend.requests == []  # the header from an untrusted client is ignored


@async_test
async def test_affinity_cookie_is_secure_over_https_only() -> None:
    sticky = {"nginx.ingress.kubernetes.io/affinity": "cookie",
              "nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    async with site(configmap(**{"session-cookie-salt": "s"}), annotations=sticky) as (proxy, _):
        async with await proxy.tls("a.example.com") as client:
            cookie = (await client.request("GET", "/", host="a.example.com")).header("set-cookie")
            assert cookie is not None and "; Secure" in cookie
        async with await proxy.plain() as client:
            cookie = (await client.request("GET", "/", host="a.example.com")).header("set-cookie")
            assert cookie is not None and "Secure" not in cookie
