"""Retries: proxy-next-upstream conditions, non-idempotent requests, body replay, tries, the retry budget."""

from __future__ import annotations

import contextlib

from h2client import H2Client
from harness import RawClient, async_test, pattern, route, running_proxy, service, snapshot
from health_pods import NO_EJECTION, HealthPod, with_retry

from pyngress.observability import prometheus
from pyngress.observability.export import merge
from pyngress.observability.workers import local_state


async def two(exits: contextlib.AsyncExitStack) -> tuple[HealthPod, HealthPod]:
    a, b = await HealthPod.start("a"), await HealthPod.start("b")
    exits.push_async_callback(a.close)
    exits.push_async_callback(b.close)
    return a, b


async def each_first(client: RawClient, method: str, body: bytes = b"", n: int = 2) -> list[int]:
    """n requests on one connection: with round robin over two pods, each pod is tried first once."""
    return [(await client.request(method, f"/x/{i}", body=body)).status for i in range(n)]


@async_test
async def test_post_not_retried_after_the_request_was_sent() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.hang_up = True
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("s", [a, b]))])))
        async with await proxy.client() as client:
            statuses = await each_first(client, "POST", b"order=1")
        assert sorted(statuses) == [200, 502]  # the one sent to a is not sent again
        assert len(a.served) == 1 and len(b.served) == 1


@async_test
async def test_get_is_retried_on_another_endpoint_after_a_hang_up() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.hang_up = True
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("s", [a, b]))])))
        async with await proxy.client() as client:
            assert await each_first(client, "GET") == [200, 200]
        assert len(b.served) == 2


@async_test
async def test_non_idempotent_in_the_policy_allows_the_post_retry_with_its_body() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.hang_up = True
        r = with_retry(route(service("s", [a, b])), non_idempotent=True)
        proxy = await exits.enter_async_context(running_proxy(snapshot([r])))
        async with await proxy.client() as client:
            assert await each_first(client, "POST", b"order=1") == [200, 200]
        assert [x.body for x in b.served] == [b"order=1", b"order=1"]


@async_test
async def test_a_put_body_is_replayed_when_it_fits_the_buffer_and_not_beyond() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.hang_up = True
        body = pattern(6000)
        r = with_retry(route(service("s", [a, b])), body_buffer=8192)  # client-body-buffer-size
        proxy = await exits.enter_async_context(running_proxy(snapshot([r])))
        async with await proxy.client() as client:
            assert await each_first(client, "PUT", body) == [200, 200]
        assert all(x.body == body for x in b.served)
        big = pattern(20000)
        async with await proxy.client() as client:
            statuses = await each_first(client, "PUT", big)
        assert sorted(statuses) == [200, 502]  # too big to keep: not sent again


@async_test
async def test_http_502_retried_only_when_the_policy_names_it() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.status = 502
        svc = service("s", [a, b])
        plain = route(svc, "/plain")
        retried = with_retry(route(svc, "/retried"), statuses=frozenset({502}))
        proxy = await exits.enter_async_context(running_proxy(snapshot([plain, retried], settings=NO_EJECTION)))
        async with await proxy.client() as client:
            plain_statuses = [(await client.request("GET", "/plain")).status for _ in range(2)]
            retried_statuses = [(await client.request("GET", "/retried")).status for _ in range(2)]
        assert sorted(plain_statuses) == [200, 502]
        assert retried_statuses == [200, 200]


@async_test
async def test_tries_bounds_the_attempts() -> None:
    async with contextlib.AsyncExitStack() as exits:
        pods = []
        for i in range(5):
            pod = await HealthPod.start(f"p{i}")
            pod.status = 503
            exits.push_async_callback(pod.close)
            pods.append(pod)
        r = with_retry(route(service("s", pods)), statuses=frozenset({503}), tries=3)
        proxy = await exits.enter_async_context(running_proxy(snapshot([r], settings=NO_EJECTION)))
        async with await proxy.client() as client:
            assert (await client.request("GET", "/")).status == 503
        assert sum(len(p.served) for p in pods) == 3


@async_test
async def test_retry_budget_keeps_retries_under_twenty_percent() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.status = 503
        r = with_retry(route(service("s", [a, b])), statuses=frozenset({503}), tries=3)
        proxy = await exits.enter_async_context(running_proxy(snapshot([r], settings=NO_EJECTION)))
        requests = 200
        async with await proxy.client() as client:
            statuses = [(await client.request("GET", f"/{i}")).status for i in range(requests)]
        retries = len(a.served) + len(b.served) - requests
        assert 0 < retries <= 0.2 * requests + 1
        assert statuses.count(503) == len(a.served) - retries  # the failures the budget did not retry
        assert statuses.count(503) > 0


@async_test
async def test_off_never_retries() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.hang_up = True
        r = with_retry(route(service("s", [a, b])), on_error=False, on_timeout=False)
        proxy = await exits.enter_async_context(running_proxy(snapshot([r])))
        async with await proxy.client() as client:
            assert sorted(await each_first(client, "GET")) == [200, 502]


@async_test
async def test_invalid_header_retried_only_when_named() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        svc = service("s", [a, b])
        plain = route(svc, "/garbage")  # the EchoBackend answers /garbage with a malformed status line
        retried = with_retry(route(svc, "/garbage/r"), on_invalid_header=True)
        proxy = await exits.enter_async_context(running_proxy(snapshot([plain, retried], settings=NO_EJECTION)))
        async with await proxy.client() as client:
            assert (await client.request("GET", "/garbage")).status == 502
        async with await proxy.client() as client:
            assert (await client.request("GET", "/garbage/r")).status == 502  # both pods answer garbage
        assert len(a.served) + len(b.served) == 3  # one attempt, then two (each pod once)


@async_test
async def test_http2_request_is_retried_on_another_endpoint_and_the_failed_attempt_counted() -> None:
    async with contextlib.AsyncExitStack() as exits:
        a, b = await two(exits)
        a.hang_up = True
        proxy = await exits.enter_async_context(running_proxy(snapshot([route(service("s", [a, b]))],
                                                                       settings=NO_EJECTION)))
        client = await exits.enter_async_context(await H2Client.connect(proxy.port))
        statuses = [(await client.request("GET", f"/x/{i}")).status for i in range(2)]  # each pod first once
        assert statuses == [200, 200]
        assert len(a.requests) >= 1 and len(b.served) == 2  # whatever was sent to a went again, to b
        text = prometheus.render(merge([local_state(proxy.server)])).decode()
        failed = {line.split('endpoint="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                  for line in text.splitlines() if line.startswith("pyngress_endpoint_failed_attempts_total{")}
        assert failed == {a.endpoint.key: len(a.requests), b.endpoint.key: 0.0}  # each hang-up counted
        b.hang_up = True  # nowhere left to go: the client gets 502, recorded as 502
        assert (await client.request("GET", "/y")).status == 502
        text = prometheus.render(merge([local_state(proxy.server)])).decode()
        assert any(line.startswith("nginx_ingress_controller_requests{") and 'status="502"' in line
                   for line in text.splitlines())
