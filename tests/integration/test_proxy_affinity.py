"""Session affinity end to end: the cookie pins a user to a pod, survives scale-up, moves when its pod goes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from harness import Proxy, async_test, running_proxy, service, snapshot

from pyngress.model import AffinitySpec, Backend, Endpoint, PathType, Route
from pyngress.runtime.cookies import cookie_value
from pyngress.runtime.echo import EchoServer, start_echo

COOKIE = AffinitySpec(kind="cookie", salt="test-salt", samesite="Lax", max_age=600)


@contextlib.asynccontextmanager
async def pods(n: int) -> AsyncIterator[list[EchoServer]]:
    started = [await start_echo(f"pod-{i}") for i in range(n)]
    try:
        yield started
    finally:
        for pod in started:
            await pod.close()


def web(echoes: list[EchoServer]) -> Backend:
    return service("web", [Endpoint("127.0.0.1", p.port, name=p.pod) for p in echoes])


def sticky_route(backend: Backend, affinity: AffinitySpec = COOKIE) -> Route:
    return Route("", "/app", PathType.PREFIX, backend, "default/web", affinity=affinity)


async def get(proxy: Proxy, token: bytes | None) -> tuple[str, bytes | None, str | None]:
    """One request (with the session cookie when given): (pod, new token if set, raw Set-Cookie)."""
    headers = [("Cookie", f"theme=dark; INGRESSCOOKIE={token.decode()}")] if token else []
    response = await proxy.get("/app/cart", headers=headers)
    assert response.status == 200
    line = response.header("Set-Cookie")
    new = cookie_value(line.split(";")[0].encode(), b"INGRESSCOOKIE") if line else None
    return response.header("X-Pod") or "?", new, line


@async_test
async def test_a_hundred_requests_with_the_cookie_reach_one_pod() -> None:
    async with pods(4) as echoes, running_proxy(snapshot([sticky_route(web(echoes))])) as proxy:
        pod, token, line = await get(proxy, None)
        assert token is not None and line is not None
        assert "Path=/app" in line and "HttpOnly" in line and "SameSite=Lax" in line and "Max-Age=600" in line
        assert "127.0.0.1" not in line
        for _ in range(100):
            again, new_token, _ = await get(proxy, token)
            assert again == pod
            assert new_token is None  # a cookie that fits is not set again


@async_test
async def test_scale_up_from_three_to_four_pods_moves_no_session() -> None:
    async with pods(4) as echoes, running_proxy(snapshot([sticky_route(web(echoes[:3]))])) as proxy:
        sessions = [await get(proxy, None) for _ in range(30)]
        assert len({pod for pod, _, _ in sessions}) == 3
        proxy.server.install(snapshot([sticky_route(web(echoes))], version=2))
        for pod, token, _ in sessions:
            again, new_token, _ = await get(proxy, token)
            assert (again, new_token) == (pod, None)
        newcomers = {(await get(proxy, None))[0] for _ in range(8)}
        assert "pod-3" in newcomers  # new sessions do reach the new pod


@async_test
async def test_when_the_pod_goes_away_the_cookie_is_reissued_for_a_live_pod() -> None:
    async with pods(3) as echoes, running_proxy(snapshot([sticky_route(web(echoes))])) as proxy:
        pod, token, _ = await get(proxy, None)
        remaining = [e for e in echoes if e.pod != pod]
        proxy.server.install(snapshot([sticky_route(web(remaining))], version=2))
        moved, new_token, _ = await get(proxy, token)
        assert moved != pod and new_token not in (None, token)
        assert (await get(proxy, new_token))[:2] == (moved, None)


@async_test
async def test_client_ip_affinity_keeps_an_address_on_one_pod() -> None:
    spec = AffinitySpec(kind="client-ip", timeout=60.0)
    async with pods(4) as echoes, running_proxy(snapshot([sticky_route(web(echoes), spec)])) as proxy:
        seen = {(await get(proxy, None))[0] for _ in range(20)}
        assert len(seen) == 1
