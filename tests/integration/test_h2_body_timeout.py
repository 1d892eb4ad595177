"""client-body-timeout on HTTP/2 streams, HTTP/1.1 pods and gRPC pods alike (issue 4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from h2client import H2Client
from harness import async_test, running_proxy, snapshot, stack
from test_grpc import grpc_pod, grpc_route

from pyngress.model import ProxySettings

TIMEOUT = ProxySettings(client_body_timeout=0.3)


@async_test
async def test_a_stalled_request_body_gets_408_and_the_other_streams_go_on() -> None:
    async with stack(settings=TIMEOUT) as s, await H2Client.connect(s.proxy.port) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stalled = client.start("POST", "/upload", end=False)
        await client.send_body(stalled, b"first part", end=False)  # ... and nothing more
        flowing = client.start("POST", "/echo", end=False)
        for _ in range(8):  # a body that keeps coming is not cut, however long it takes in all
            await client.send_body(flowing, b"x" * 10, end=False)
            await asyncio.sleep(0.1)
        await client.send_body(flowing, b"end")
        resp = await client.response(stalled)
        assert resp.status == 408
        assert loop.time() - started < 3.0
        assert (await client.response(flowing)).status == 200
        assert (await client.request("GET", "/after")).status == 200  # the connection lives on


@async_test
async def test_a_request_that_ended_is_not_timed_out_while_the_pod_thinks() -> None:
    async with stack(settings=TIMEOUT) as s, await H2Client.connect(s.proxy.port) as client:
        assert (await client.request("POST", "/delay/0.8", body=b"all of it")).status == 200


@async_test
async def test_a_stalled_grpc_client_stream_ends_with_an_error_not_a_hang() -> None:
    released = asyncio.Event()
    consumed = asyncio.Event()

    async def one_then_silence() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await released.wait()  # the stall, until the test is over
        finally:
            consumed.set()

    async with grpc_pod("pod") as endpoint, \
            running_proxy(snapshot([grpc_route([endpoint])], settings=TIMEOUT)) as proxy, \
            aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(aio.AioRpcError) as info:
            await channel.stream_unary("/test.Echo/Collect")(one_then_silence(), timeout=10)
        released.set()
        await asyncio.wait_for(consumed.wait(), 5)  # grpc's task that reads the iterator is done with it
        assert info.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED  # ended by the proxy, not the deadline
        assert loop.time() - started < 3.0
        collect = channel.stream_unary("/test.Echo/Collect")
        assert await collect(iter([b"ab", b"cde"]), timeout=10) == b"5"  # calls that keep sending are fine
