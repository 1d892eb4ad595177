"""Requests that match no rule (our 404, or the default backend) get their host's redirect and HSTS, as
ingress-nginx's per-host default location: a TLS host redirects, an unknown host does not; HTTPS gets HSTS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from harness import EchoBackend, async_test
from tls_harness import CA, TLSProxy, app, compile_docs, configmap, secret, tls_proxy

HSTS = "max-age=31536000; includeSubDomains"
LEAF = CA.issue_cert("a.example.com")


def only_api(docs: list[dict[str, Any]], default_backend: bool = False) -> list[dict[str, Any]]:
    """`app`'s Ingress narrowed to /api, so `/other` matches no rule; optionally with spec.defaultBackend."""
    ingress = docs[-1]
    for rule in ingress["spec"]["rules"]:
        rule["http"]["paths"][0]["path"] = "/api"
    if default_backend:
        ingress["spec"]["defaultBackend"] = {"service": {"name": "a", "port": {"name": "http"}}}
    return docs


@contextlib.asynccontextmanager
async def site(*extra: dict[str, Any], annotations: dict[str, str] | None = None,
               default_backend: bool = False) -> AsyncIterator[tuple[TLSProxy, EchoBackend]]:
    backend = await EchoBackend.start("a")
    try:
        docs = [secret("cert", LEAF), *extra,
                *only_api(app("a", ["a.example.com"], backend.port, annotations=annotations,
                              tls=[(["a.example.com"], "cert")]), default_backend)]
        async with tls_proxy(compile_docs(docs)) as proxy:
            yield proxy, backend
    finally:
        await backend.close()


@async_test
async def test_unmatched_path_on_a_tls_host_is_redirected_and_gets_hsts_over_https() -> None:
    async with site() as (proxy, _):
        async with await proxy.plain() as client:
            resp = await client.request("GET", "/other?q=1", host="a.example.com")
            assert resp.status == 308
            assert resp.header("location") == f"https://a.example.com:{proxy.https_port}/other?q=1"
            acme = await client.request("GET", "/.well-known/acme-challenge/t", host="a.example.com")
            assert acme.status == 404 and acme.header("strict-transport-security") is None
        async with await proxy.tls("a.example.com") as client:
            resp = await client.request("GET", "/other", host="a.example.com")
            assert resp.status == 404 and resp.header("strict-transport-security") == HSTS


@async_test
async def test_unknown_host_is_not_redirected_but_https_gets_hsts() -> None:
    async with site() as (proxy, _):
        async with await proxy.plain() as client:
            resp = await client.request("GET", "/other", host="unknown.example.org")
            assert resp.status == 404 and resp.header("strict-transport-security") is None
        async with await proxy.tls("unknown.example.org") as client:
            resp = await client.request("GET", "/other", host="unknown.example.org")
            assert resp.status == 404 and resp.header("strict-transport-security") == HSTS


@async_test
async def test_default_backend_follows_the_host_policy() -> None:
    async with site(default_backend=True) as (proxy, backend):
        async with await proxy.plain() as client:
            resp = await client.request("GET", "/other", host="a.example.com")
            assert resp.status == 308 and backend.requests == []
            served = await client.request("GET", "/other", host="unknown.example.org")
            assert served.status == 200 and served.json()["path"] == "/other"
        async with await proxy.tls("a.example.com") as client:
            resp = await client.request("GET", "/other", host="a.example.com")
            assert resp.status == 200 and resp.header("strict-transport-security") == HSTS


@async_test
async def test_the_hosts_ingress_annotations_apply_to_its_unmatched_paths() -> None:
    async with site(annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}) as (proxy, _), \
            await proxy.plain() as client:
        assert (await client.request("GET", "/other", host="a.example.com")).status == 404


@async_test
async def test_configmap_force_ssl_redirect_redirects_unknown_hosts_too() -> None:
    async with site(configmap(**{"force-ssl-redirect": "true"})) as (proxy, _), await proxy.plain() as client:
        resp = await client.request("GET", "/x", host="unknown.example.org")
        assert resp.status == 308 and resp.header("location") == f"https://unknown.example.org:{proxy.https_port}/x"


@async_test
async def test_hsts_off_and_no_redirect_leaves_unmatched_requests_alone() -> None:
    cm = configmap(**{"hsts": "false", "ssl-redirect": "false"})
    async with site(cm) as (proxy, _), await proxy.tls("a.example.com") as client:
        resp = await client.request("GET", "/other", host="a.example.com")
        assert resp.status == 404 and resp.header("strict-transport-security") is None
