"""gRPC calls get X-Forwarded-* / X-Real-IP by the same trust rules as HTTP/1.1 requests (issue 4):
overwritten for untrusted clients, extended from trusted proxies (use-forwarded-headers, proxy-real-ip-cidr)."""

from __future__ import annotations

from grpc import aio
from harness import async_test, running_proxy, snapshot
from test_grpc import Pod, grpc_pod, grpc_route

from pyngress.model import ProxySettings

SPOOFED = (("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1"), ("x-real-ip", "9.9.9.9"),
           ("x-forwarded-proto", "https"), ("x-forwarded-host", "outer.example"), ("x-forwarded-port", "443"))


async def seen_by_pod(settings: ProxySettings) -> dict[str, str]:
    """The metadata a pod receives for one call carrying SPOOFED, through a proxy with `settings`."""
    pods: list[Pod] = []
    async with grpc_pod("pod", pods=pods) as endpoint, \
            running_proxy(snapshot([grpc_route([endpoint])], settings=settings)) as proxy, \
            aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        await channel.unary_unary("/test.Echo/Unary")(b"x", metadata=SPOOFED, timeout=10)
        return pods[0].peers[-1]


@async_test
async def test_untrusted_client_cannot_set_forwarded_headers_on_a_grpc_call() -> None:
    got = await seen_by_pod(ProxySettings())
    assert (got["x-forwarded-for"], got["x-real-ip"]) == ("127.0.0.1", "127.0.0.1")
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"].startswith("127.0.0.1:")  # the :authority the client sent us
    assert got["x-forwarded-port"] != "443"
    # proxy-real-ip-cidr alone trusts nobody, as for HTTP/1.1 (and as ingress-nginx)
    assert (await seen_by_pod(ProxySettings(trusted_proxies=("127.0.0.0/8",))))["x-forwarded-for"] == "127.0.0.1"


@async_test
async def test_trusted_proxy_chain_is_extended_and_real_ip_is_the_rightmost_untrusted() -> None:
    trusted = ("127.0.0.0/8", "10.0.0.0/8")
    got = await seen_by_pod(ProxySettings(use_forwarded_headers=True, trusted_proxies=trusted))
    assert got["x-forwarded-for"] == "6.6.6.6, 1.2.3.4, 10.1.1.1, 127.0.0.1"
    assert got["x-real-ip"] == "1.2.3.4"
    assert (got["x-forwarded-proto"], got["x-forwarded-host"], got["x-forwarded-port"]) == \
        ("https", "outer.example", "443")


@async_test
async def test_use_forwarded_headers_without_cidr_trusts_every_peer() -> None:
    got = await seen_by_pod(ProxySettings(use_forwarded_headers=True))
    assert got["x-forwarded-for"] == "6.6.6.6, 1.2.3.4, 10.1.1.1, 127.0.0.1"
    assert got["x-forwarded-proto"] == "https"
