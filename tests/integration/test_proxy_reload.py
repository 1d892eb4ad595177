"""Configuration reloads under continuous load, and draining with a request in flight."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from harness import EchoBackend, RawClient, Stack, async_test, build_request, route, service, snapshot, stack

from pyngress.model import Snapshot

KEEPALIVE_REQUESTS = 300
FRESH_LIMIT = 300  # the fresh-connection task stops at this count, or when the keep-alive task is done
RELOADS = 20


def _config(version: int, a: list[EchoBackend], b: list[EchoBackend], extra: EchoBackend) -> Snapshot:
    """Even versions: the service on pods a*; odd versions: on pods b*, plus a second backend under /extra."""
    if version % 2 == 0:
        return snapshot([route(service("echo", a))], version=version)
    return snapshot([route(service("echo", b)), route(service("extra", [extra]), "/extra")], version=version)


@async_test
async def test_twenty_reloads_during_continuous_load_fail_no_request() -> None:
    async with contextlib.AsyncExitStack() as exits:
        pods = []
        for name in ("a0", "a1", "a2", "b0", "b1", "x0"):
            pods.append(await EchoBackend.start(name))
            exits.push_async_callback(pods[-1].close)
        a, b, extra = pods[:3], pods[3:5], pods[5]
        s = await exits.enter_async_context(stack(pods=0))
        server = s.proxy.server
        server.install(_config(0, a, b, extra))
        progress = asyncio.Condition()
        done = 0
        statuses: list[int] = []

        async def keepalive_client() -> None:
            nonlocal done
            async with await s.proxy.client() as c:
                for i in range(KEEPALIVE_REQUESTS):
                    statuses.append((await c.request("GET", f"/extra/{i}" if i % 3 == 0 else f"/k/{i}")).status)
                    async with progress:
                        done += 1
                        progress.notify_all()

        async def fresh_client(stop: asyncio.Task[None]) -> None:
            for i in range(FRESH_LIMIT):
                if stop.done():
                    return
                statuses.append((await s.proxy.get(f"/f/{i}")).status)

        keepalive = asyncio.create_task(keepalive_client())
        fresh = asyncio.create_task(fresh_client(keepalive))
        try:
            for version in range(1, RELOADS + 1):
                async with progress:
                    await asyncio.wait_for(progress.wait_for(lambda v=version: done >= v * 12), 10)
                server.install(_config(version, a, b, extra))
            await asyncio.wait_for(asyncio.gather(keepalive, fresh), 30)
        finally:
            keepalive.cancel()
            fresh.cancel()
            await asyncio.gather(keepalive, fresh, return_exceptions=True)
        assert len(statuses) >= KEEPALIVE_REQUESTS
        assert set(statuses) == {200}
        # the last config (version 20: pods a*) is the one serving now
        assert {(await s.proxy.get(f"/last/{i}")).json()["pod"] for i in range(6)} == {"a0", "a1", "a2"}
        assert all(p.requests for p in pods)  # every pod served during the run


async def _idle_and_slow(s: Stack) -> tuple[RawClient, RawClient]:
    idle = await s.proxy.client()
    assert (await idle.request("GET", "/warm")).status == 200
    slow = await s.proxy.client()
    await slow.send(build_request("GET", "/delay/0.5"))
    await s.backend.wait_requests(2)
    return idle, slow


@async_test
async def test_drain_finishes_inflight_request_with_connection_close_and_refuses_new_connections() -> None:
    async with stack() as s:
        idle, slow = await _idle_and_slow(s)
        async with idle, slow:
            drained = asyncio.create_task(s.proxy.server.drain(5.0))
            assert await idle.at_eof()  # idle keep-alive connections are closed at once
            with pytest.raises(ConnectionRefusedError):
                await s.proxy.client()
            resp = await slow.response()
            assert resp.status == 200
            assert resp.header("Connection") == "close"
            assert await slow.at_eof()
            await asyncio.wait_for(drained, 2.0)  # returns when the last connection is gone, not after grace
