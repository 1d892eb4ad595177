"""Passive health for gRPC pods (issue 7): calls relayed over HTTP/2 feed outlier ejection as HTTP/1.1 ones do."""

from __future__ import annotations

import contextlib

import grpc
from grpc import aio
from harness import async_test, refused_port, running_proxy, snapshot
from test_grpc import Pod, grpc_pod, grpc_route

from pyngress.model import Endpoint


async def outcomes(channel: aio.Channel, n: int) -> list[grpc.StatusCode]:
    unary = channel.unary_unary("/test.Echo/Unary")
    codes = []
    for i in range(n):  # one at a time: round robin alternates between the pods
        try:
            await unary(b"m%d" % i, timeout=10)
            codes.append(grpc.StatusCode.OK)
        except aio.AioRpcError as error:
            codes.append(error.code())
    return codes


@async_test
async def test_a_pod_answering_unavailable_is_ejected_after_five_calls() -> None:
    pods: list[Pod] = []
    async with contextlib.AsyncExitStack() as exits:
        good = await exits.enter_async_context(grpc_pod("good", pods=pods))
        sick = await exits.enter_async_context(grpc_pod("sick", pods=pods))
        pods[1].unavailable = True
        proxy = await exits.enter_async_context(running_proxy(snapshot([grpc_route([good, sick])])))
        channel = await exits.enter_async_context(aio.insecure_channel(f"127.0.0.1:{proxy.port}"))
        codes = await outcomes(channel, 30)
        assert codes.count(grpc.StatusCode.UNAVAILABLE) == 5  # Envoy's default: 5 consecutive failures
        assert codes[-10:] == [grpc.StatusCode.OK] * 10  # then only the good pod is called
        assert sick.key in proxy.server.health.down and good.key not in proxy.server.health.down
        assert len(pods[1].peers) == 5


@async_test
async def test_an_unreachable_grpc_pod_is_ejected_after_five_failed_connects() -> None:
    async with contextlib.AsyncExitStack() as exits:
        good = await exits.enter_async_context(grpc_pod("good"))
        dead = Endpoint("127.0.0.1", exits.enter_context(refused_port()), name="dead")
        proxy = await exits.enter_async_context(running_proxy(snapshot([grpc_route([good, dead])])))
        channel = await exits.enter_async_context(aio.insecure_channel(f"127.0.0.1:{proxy.port}"))
        codes = await outcomes(channel, 30)
        assert codes.count(grpc.StatusCode.UNAVAILABLE) == 5
        assert codes[-10:] == [grpc.StatusCode.OK] * 10
        assert dead.key in proxy.server.health.down
