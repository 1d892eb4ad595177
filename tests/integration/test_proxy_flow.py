"""Flow and access control through real sockets: rate and connection limits per client address, access lists
(v4 and v6), the client address behind trusted proxies, and proxy-body-size."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

from harness import EchoBackend, RawClient, async_test, chunked, pattern, route, service, snapshot, wait_until

from pyngress.model import ProxySettings
from pyngress.model.flow import FlowSpec, RateSpec
from pyngress.observability import events
from pyngress.runtime.server import ProxyServer


async def connect(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> RawClient:
    """A client whose connection comes from `source` (any 127/8 address is ours on Linux loopback)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((source, 0))
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    return RawClient(reader, writer)


@dataclasses.dataclass
class Limited:
    server: ProxyServer
    port: int
    backend: EchoBackend
    host: str

    async def client(self, source: str | None = None) -> RawClient:
        return await connect(self.port, source or self.host, self.host)

    async def status(self, target: str = "/", source: str | None = None, **kwargs: Any) -> int:
        async with await self.client(source) as c:
            return (await c.request("GET", target, **kwargs)).status


@contextlib.asynccontextmanager
async def limited(flow: FlowSpec | None, *, settings: ProxySettings | None = None, max_body: int = 1 << 20,
                  host: str = "127.0.0.1") -> AsyncIterator[Limited]:
    backend = await EchoBackend.start()
    server = ProxyServer(snapshot([dataclasses.replace(route(service("echo", [backend])), flow=flow,
                                                       max_body=max_body)], settings=settings),
                         rng=random.Random(0))
    try:
        port = await server.listen(host, 0)
        yield Limited(server, port, backend, host)
    finally:
        await server.drain(1.0)
        await backend.close()


def rate(rps: float = 0, rpm: float = 0, burst: int = 5, **kwargs: Any) -> FlowSpec:
    spec = RateSpec(rps, burst, f"{rps} r/s") if rps else RateSpec(rpm / 60, burst, f"{rpm} r/m")
    return FlowSpec("default/site", rates=(spec,), **kwargs)


@async_test
async def test_429_after_exactly_burst_requests_in_a_tight_loop() -> None:
    before = events.EVENTS.rate_limited["default", "site", "rate"]
    async with limited(rate(rpm=1, burst=5)) as p, await p.client() as c:
        statuses = [(await c.request("GET", "/")).status for _ in range(5)]
        refused = await c.request("GET", "/")
        assert statuses == [200] * 5
        assert refused.status == 429
        assert refused.header("Retry-After") is not None and int(refused.header("Retry-After") or 0) >= 50
        assert refused.header("Connection") == "keep-alive"  # a refusal does not cost the connection
        assert len(p.backend.requests) == 5
        assert (await c.request("GET", "/")).status == 429
        assert p.server.flow.refused_rate == 2
        # and the metric pyngress_rate_limited_requests{namespace="default", ingress="site", limit="rate"}
        assert events.EVENTS.rate_limited["default", "site", "rate"] - before == 2


@async_test
async def test_served_again_after_the_refill_time() -> None:
    async with limited(rate(rps=2, burst=1)) as p, await p.client() as c:
        assert (await c.request("GET", "/")).status == 200
        statuses = []
        while 429 not in statuses:  # the ticker's clock may refill once before we get there
            statuses.append((await c.request("GET", "/")).status)
            assert len(statuses) < 10
        loop = asyncio.get_running_loop()
        refused_at = loop.time()
        while (await c.request("GET", "/")).status == 429:
            assert loop.time() - refused_at < 5.0, "not served again within 5 s"
            await asyncio.sleep(0.05)  # pacing the polls, not synchronisation


@async_test
async def test_buckets_are_per_client_address() -> None:
    async with limited(rate(rpm=1, burst=3)) as p:
        for source in ("127.0.0.2", "127.0.0.3"):
            async with await p.client(source) as c:
                assert [(await c.request("GET", "/")).status for _ in range(4)] == [200, 200, 200, 429]
        assert len(p.backend.requests) == 6


@async_test
async def test_limit_whitelist_is_exempt() -> None:
    async with limited(rate(rpm=1, burst=1, exempt=("127.0.0.2/32",))) as p:
        assert [await p.status(source="127.0.0.2") for _ in range(4)] == [200] * 4
        assert [await p.status(source="127.0.0.3") for _ in range(2)] == [200, 429]


@async_test
async def test_connection_limit_counts_requests_in_progress_per_client() -> None:
    flow = FlowSpec("default/site", connections=1, conn_status=503)
    async with limited(flow) as p, await p.client("127.0.0.2") as slow, await p.client("127.0.0.2") as second:
        await slow.send(b"GET /delay/1.5 HTTP/1.1\r\nHost: x\r\n\r\n")  # in progress for 1.5 s
        await wait_until(lambda: len(p.server.connections) == 2 and any(
            c.queue for c in p.server.connections), what="the slow request in progress")
        assert (await second.request("GET", "/")).status == 503
        assert p.server.flow.refused_connections == 1
        assert await p.status(source="127.0.0.3") == 200  # another client is not affected
        assert (await slow.response()).status == 200
        assert (await second.request("GET", "/")).status == 200  # the slot was given back
        # a completed response gives its slot back too: one at a time, every request passes
        assert [await p.status(source="127.0.0.4") for _ in range(3)] == [200, 200, 200]


@async_test
async def test_allowlist_and_denylist_ipv4() -> None:
    async with limited(FlowSpec("default/site", allow=("127.0.0.0/30",), deny=("127.0.0.2/32",))) as p:
        assert await p.status(source="127.0.0.1") == 200
        assert await p.status(source="127.0.0.2") == 403
        assert await p.status(source="127.0.0.9") == 403
        assert len(p.backend.requests) == 1
        assert p.server.flow.refused_access == 2


@async_test
async def test_allowlist_and_denylist_ipv6() -> None:
    async with limited(FlowSpec("default/site", deny=("::1/128",)), host="::1") as p:
        assert await p.status() == 403
    async with limited(FlowSpec("default/site", allow=("::1/128",)), host="::1") as p:
        assert await p.status() == 200
    async with limited(FlowSpec("default/site", allow=("2001:db8::/32", "127.0.0.0/8")), host="::1") as p:
        assert await p.status() == 403


@async_test
async def test_blocked_user_agent_and_referer() -> None:
    flow = FlowSpec("default/site", block_user_agents=("~*bot",), block_referers=("https://spam.test/",))
    async with limited(flow) as p:
        assert await p.status(headers=[("User-Agent", "GoodBrowser")]) == 200
        assert await p.status(headers=[("User-Agent", "EvilBot/2")]) == 403
        assert await p.status(headers=[("Referer", "HTTPS://SPAM.TEST/")]) == 403


TRUSTED = ProxySettings(use_forwarded_headers=True, trusted_proxies=("127.0.0.2/32",))


@async_test
async def test_forwarded_for_is_ignored_from_untrusted_peers() -> None:
    async with limited(rate(rpm=1, burst=2), settings=TRUSTED) as p:
        spoofs = [await p.status(source="127.0.0.3", headers=[("X-Forwarded-For", f"10.0.0.{i}")])
                  for i in range(3)]
        assert spoofs == [200, 200, 429]  # one bucket: the peer's
        assert {r.header("X-Real-IP") for r in p.backend.requests} == {"127.0.0.3"}


@async_test
async def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    async with limited(rate(rpm=1, burst=2, deny=("203.0.113.66/32",)), settings=TRUSTED) as p:
        for client in ("198.51.100.1", "198.51.100.2"):
            got = [await p.status(source="127.0.0.2", headers=[("X-Forwarded-For", f"{client}, 127.0.0.2")])
                   for _ in range(3)]
            assert got == [200, 200, 429], client  # a bucket per forwarded client
        assert await p.status(source="127.0.0.2", headers=[("X-Forwarded-For", "203.0.113.66")]) == 403
        assert p.backend.requests[0].header("X-Real-IP") == "198.51.100.1"


@async_test
async def test_forwarded_for_ipv6_with_brackets_and_ports() -> None:
    async with limited(FlowSpec("default/site", deny=("2001:db8::/32",)), settings=TRUSTED) as p:
        assert await p.status(source="127.0.0.2", headers=[("X-Forwarded-For", "[2001:db8::5]:4431")]) == 403
        assert await p.status(source="127.0.0.2", headers=[("X-Forwarded-For", "2001:db9::5")]) == 200
        assert p.backend.requests[-1].header("X-Real-IP") == "2001:db9::5"


@async_test
async def test_custom_forwarded_for_header() -> None:
    settings = dataclasses.replace(TRUSTED, forwarded_for_header="CF-Connecting-IP")
    async with limited(FlowSpec("default/site", deny=("192.0.2.1/32",)), settings=settings) as p:
        assert await p.status(source="127.0.0.2", headers=[("CF-Connecting-IP", "192.0.2.1")]) == 403
        assert await p.status(source="127.0.0.2", headers=[("X-Forwarded-For", "192.0.2.1")]) == 200


@async_test
async def test_413_on_content_length_before_any_byte_reaches_a_pod() -> None:
    async with limited(None, max_body=1000) as p, await p.client() as c:
        resp = await c.request("POST", "/", body=pattern(1001))
        assert resp.status == 413
        assert resp.header("Connection") == "keep-alive"  # the whole body was read: the connection goes on
        await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n" + pattern(5000))
        resp = await c.response()
        assert resp.status == 413
        assert resp.header("Connection") == "close"  # the rest of that body is not read
        assert await c.at_eof()
        assert p.backend.connections == 0 and p.backend.bytes_received == 0
        assert p.server.flow.refused_body == 2
    async with limited(None, max_body=1000) as p, await p.client() as c:
        assert (await c.request("POST", "/", body=pattern(1000))).status == 200  # exactly the limit is fine


@async_test
async def test_413_when_a_chunked_body_grows_past_the_limit_and_the_upstream_request_is_aborted() -> None:
    async with limited(None, max_body=10_000) as p, await p.client() as c:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        await c.send(head + chunked(pattern(4000))[:-5])
        await wait_until(lambda: p.backend.bytes_received > 4000, what="the first chunk upstream")
        await c.send(chunked(pattern(8000), size=8000))
        resp = await c.response()
        assert resp.status == 413
        assert await c.at_eof()
        await wait_until(lambda: p.backend.connections == 1 and not p.backend._writers,
                         what="the upstream request aborted")
        assert p.backend.requests == []  # the backend never saw a complete request
        assert p.server.flow.refused_body == 1


@async_test
async def test_chunked_body_within_the_limit_and_unlimited() -> None:
    async with limited(None, max_body=10_000) as p, await p.client() as c:
        body = pattern(9000)
        resp = await c.request("POST", "/", [("Transfer-Encoding", "chunked")], chunked(body, 1000))
        assert resp.status == 200 and resp.json()["body_bytes"] == 9000
    async with limited(None, max_body=0) as p, await p.client() as c:
        resp = await c.request("POST", "/", body=pattern(3 << 20))
        assert resp.status == 200


@async_test
async def test_forwarded_for_header_can_be_x_real_ip() -> None:
    settings = dataclasses.replace(TRUSTED, forwarded_for_header="X-Real-IP")
    async with limited(FlowSpec("default/site", deny=("192.0.2.9/32",)), settings=settings) as p:
        assert await p.status(source="127.0.0.2", headers=[("X-Real-IP", "192.0.2.9")]) == 403
        assert await p.status(source="127.0.0.3", headers=[("X-Real-IP", "192.0.2.9")]) == 200  # untrusted
        assert await p.status(source="127.0.0.2", headers=[("X-Real-IP", "192.0.2.10")]) == 200
        assert p.backend.requests[-1].header("X-Real-IP") == "192.0.2.10"
        assert p.backend.requests[-1].header("X-Forwarded-For") == "192.0.2.10, 127.0.0.2"


@async_test
async def test_buckets_survive_a_reload_that_keeps_the_limit_and_restart_when_it_changes() -> None:
    async with limited(rate(rpm=1, burst=2)) as p:
        assert [await p.status() for _ in range(3)] == [200, 200, 429]
        snap = p.server.snapshot
        p.server.install(dataclasses.replace(snap, version=2))  # same limits: same live buckets
        assert await p.status() == 429
        changed = dataclasses.replace(snap.routes[0], flow=rate(rpm=1, burst=3))
        p.server.install(dataclasses.replace(snap, version=3, routes=(changed,)))
        assert [await p.status() for _ in range(4)] == [200, 200, 200, 429]


@async_test
async def test_connection_slot_is_given_back_when_the_client_goes_away_mid_request() -> None:
    async with limited(FlowSpec("default/site", connections=1)) as p:
        async with await p.client() as gone:  # its request is in progress for 1.5 s; it leaves before the answer
            await gone.send(b"GET /delay/1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_until(lambda: any(c.queue for c in p.server.connections), what="request in progress")
            assert await p.status() == 429
        await wait_until(lambda: not p.server.connections, what="the closed connection noticed")
        assert await p.status() == 200
