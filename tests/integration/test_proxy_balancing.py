"""Balancing through the real proxy: load-aware algorithms avoid a slow pod; hashing keeps a key on one pod.

The pods are `pyngress.runtime.echo` servers; one is made slow with its `delay` option (a property of the pod
under test, not synchronisation). Load loops are bounded in count and each request has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from harness import Proxy, async_test, route, running_proxy, service, snapshot

from pyngress.model import BalanceSpec, Endpoint
from pyngress.runtime.echo import EchoServer, start_echo

CLIENTS = 10
REQUESTS_PER_CLIENT = 15


@contextlib.asynccontextmanager
async def pods(delays: list[float]) -> AsyncIterator[list[EchoServer]]:
    started = [await start_echo(f"pod-{i}", delay=d) for i, d in enumerate(delays)]
    try:
        yield started
    finally:
        for pod in started:
            await pod.close()


@contextlib.asynccontextmanager
async def proxy_for(echoes: list[EchoServer], spec: BalanceSpec) -> AsyncIterator[Proxy]:
    svc = service("web", [Endpoint("127.0.0.1", p.port, name=p.pod) for p in echoes])
    r = route(svc)
    routed = type(r)(r.host, r.path, r.path_type, r.backend, r.ingress, spec)
    async with running_proxy(snapshot([routed])) as proxy:
        yield proxy


async def load(proxy: Proxy, headers: list[tuple[str, str]] | None = None) -> Counter[str]:
    """CLIENTS keep-alive connections, each sending REQUESTS_PER_CLIENT requests in turn."""
    counts: Counter[str] = Counter()

    async def client() -> None:
        async with await proxy.client() as c:
            for _ in range(REQUESTS_PER_CLIENT):
                resp = await c.request("GET", "/", headers)
                assert resp.status == 200
                counts[resp.header("X-Pod") or "?"] += 1

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(CLIENTS))), 30)
    return counts


@pytest.mark.parametrize("algorithm", ["least_conn", "p2c", "ewma"])
@async_test
async def test_load_aware_algorithms_send_clearly_fewer_requests_to_a_slow_pod(algorithm: str) -> None:
    async with pods([0.0, 0.0, 0.05]) as echoes, proxy_for(echoes, BalanceSpec(algorithm=algorithm)) as proxy:
        counts = await load(proxy)
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert sum(counts.values()) == total
    # round robin would give the slow pod a third (50); these keep it far below that
    assert counts["pod-2"] < total * 0.2, counts


@async_test
async def test_round_robin_gives_the_slow_pod_its_full_share() -> None:
    # the contrast for the test above: round robin does not look at load
    async with pods([0.0, 0.0, 0.05]) as echoes, proxy_for(echoes, BalanceSpec()) as proxy:
        counts = await load(proxy)
    assert counts["pod-2"] == CLIENTS * REQUESTS_PER_CLIENT // 3, counts


@pytest.mark.parametrize("hash_algorithm", ["ring", "maglev"])
@async_test
async def test_hash_by_header_keeps_each_user_on_one_pod(hash_algorithm: str) -> None:
    spec = BalanceSpec(hash_by="$http_x_user", hash_algorithm=hash_algorithm)
    async with pods([0.0] * 5) as echoes, proxy_for(echoes, spec) as proxy:
        seen: dict[str, set[str]] = {}
        async with await proxy.client() as c:
            for user in range(20):
                for _ in range(5):
                    resp = await c.request("GET", "/", [("X-User", f"user-{user}")])
                    seen.setdefault(f"user-{user}", set()).add(resp.header("X-Pod") or "?")
    assert all(len(p) == 1 for p in seen.values()), seen
    assert len(set().union(*seen.values())) >= 3  # 20 users do not all hash to one or two pods


@async_test
async def test_hash_by_remote_addr_sends_one_client_to_one_pod() -> None:
    async with pods([0.0] * 4) as echoes, proxy_for(echoes, BalanceSpec(hash_by="$remote_addr")) as proxy:
        counts = await load(proxy)
    assert len(counts) == 1  # every connection comes from 127.0.0.1


@async_test
async def test_hash_subsets_spread_one_key_over_its_subset_only() -> None:
    spec = BalanceSpec(hash_by="$http_x_user", subset_size=2)
    async with pods([0.0] * 6) as echoes, proxy_for(echoes, spec) as proxy:
        counts = await load(proxy, [("X-User", "alice")])
    assert len(counts) <= 2 and sum(counts.values()) == CLIENTS * REQUESTS_PER_CLIENT
