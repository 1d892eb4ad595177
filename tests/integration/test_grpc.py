"""gRPC through the proxy (backend-protocol GRPC and GRPCS) with grpcio test servers; no protobuf code:
generic handlers with raw bytes as messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import trustme
from grpc import aio
from harness import async_test, running_proxy, service, snapshot

from pyngress.model import Endpoint, PathType, Route

STREAM_COUNT = 50


class Pod:
    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: list[dict[str, str]] = []
        self.unavailable = False  # every Unary call answered UNAVAILABLE (a pod that cannot serve)

    async def unary(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.peers.append(dict(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        if self.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "overloaded")
        if request == b"fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        context.set_trailing_metadata((("x-pod", self.name),))
        return self.name.encode() + b":" + request

    async def slow(self, request: bytes, context: aio.ServicerContext) -> bytes:
        await asyncio.sleep(float(request))
        return b"late"

    async def stream(self, request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield b"%s:%d:" % (self.name.encode(), i) + b"x" * (i * 1000)

    async def chat(self, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message[::-1]

    async def collect(self, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
        total = 0
        async for message in requests:
            total += len(message)
        return b"%d" % total


@contextlib.asynccontextmanager
async def grpc_pod(name: str, tls: trustme.CA | None = None, pods: list[Pod] | None = None
                   ) -> AsyncIterator[Endpoint]:
    pod = Pod(name)
    if pods is not None:  # the caller wants to look at what the pod received
        pods.append(pod)
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(pod.unary),
        "Slow": grpc.unary_unary_rpc_method_handler(pod.slow),
        "Stream": grpc.unary_stream_rpc_method_handler(pod.stream),
        "Chat": grpc.stream_stream_rpc_method_handler(pod.chat),
        "Collect": grpc.stream_unary_rpc_method_handler(pod.collect),
    })
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    if tls is not None:
        cert = tls.issue_cert("127.0.0.1")
        creds = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Endpoint("127.0.0.1", port, name=name)
    finally:
        await server.stop(None)


def grpc_route(endpoints: list[Endpoint], protocol: str = "GRPC") -> Route:
    svc = service("grpc", endpoints)
    return Route("", "/", PathType.PREFIX, svc, "default/grpc", backend_protocol=protocol)


@contextlib.asynccontextmanager
async def grpc_stack(pods: int = 2, protocol: str = "GRPC") -> AsyncIterator[tuple[aio.Channel, list[str]]]:
    ca = trustme.CA() if protocol == "GRPCS" else None
    async with contextlib.AsyncExitStack() as exits:
        endpoints = [await exits.enter_async_context(grpc_pod(f"pod-{i}", ca)) for i in range(pods)]
        proxy = await exits.enter_async_context(running_proxy(snapshot([grpc_route(endpoints, protocol)])))
        channel = aio.insecure_channel(f"127.0.0.1:{proxy.port}")  # h2c with prior knowledge to the proxy
        exits.push_async_callback(channel.close)
        yield channel, [e.name for e in endpoints]


@async_test
async def test_unary_calls_spread_over_pods_and_trailers_come_back() -> None:
    async with grpc_stack() as (channel, names):
        unary = channel.unary_unary("/test.Echo/Unary")
        answers = await asyncio.gather(*(unary(b"m%d" % i, timeout=10) for i in range(STREAM_COUNT)))
        assert Counter(a.split(b":")[0] for a in answers) == {b"pod-0": 25, b"pod-1": 25}
        call = unary(b"hello", timeout=10)
        assert (await call).endswith(b":hello")
        assert await call.code() == grpc.StatusCode.OK
        trailers = dict(await call.trailing_metadata() or ())
        assert trailers["x-pod"] in names  # a trailer set by the pod, carried end to end


@async_test
async def test_grpc_status_in_trailers_reaches_the_client() -> None:
    async with grpc_stack(pods=1) as (channel, _):
        with pytest.raises(aio.AioRpcError) as info:
            await channel.unary_unary("/test.Echo/Unary")(b"fail", timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "no such thing"
        with pytest.raises(aio.AioRpcError) as missing:
            await channel.unary_unary("/test.Echo/Nope")(b"x", timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


@async_test
async def test_server_streaming_client_streaming_and_bidi() -> None:
    async with grpc_stack(pods=1) as (channel, _):
        replies = [m async for m in channel.unary_stream("/test.Echo/Stream")(b"200", timeout=20)]
        assert len(replies) == 200 and replies[199].startswith(b"pod-0:199:") and len(replies[199]) > 199_000

        async def outgoing() -> AsyncIterator[bytes]:
            for i in range(100):
                yield b"y" * (i * 500)

        assert await channel.stream_unary("/test.Echo/Collect")(outgoing(), timeout=20) == \
            b"%d" % sum(i * 500 for i in range(100))
        chat = channel.stream_stream("/test.Echo/Chat")(timeout=20)
        for word in (b"abc", b"hello", b"x" * 300_000):
            await chat.write(word)
            assert await chat.read() == word[::-1]
        await chat.done_writing()
        assert await chat.code() == grpc.StatusCode.OK


@async_test
async def test_grpcs_reencrypts_to_the_pod() -> None:
    async with grpc_stack(pods=2, protocol="GRPCS") as (channel, _):
        unary = channel.unary_unary("/test.Echo/Unary")
        answers = await asyncio.gather(*(unary(b"s%d" % i, timeout=10) for i in range(10)))
        assert Counter(a.split(b":")[0] for a in answers) == {b"pod-0": 5, b"pod-1": 5}
        replies = [m async for m in channel.unary_stream("/test.Echo/Stream")(b"20", timeout=10)]
        assert len(replies) == 20


@async_test
async def test_unreachable_grpc_pod_is_unavailable() -> None:
    from harness import refused_port

    with refused_port() as dead:
        route = grpc_route([Endpoint("127.0.0.1", dead)])
        async with running_proxy(snapshot([route])) as proxy, \
                aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            with pytest.raises(aio.AioRpcError) as info:
                await channel.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@async_test
async def test_http1_request_to_a_grpc_route_fails_fast_with_502() -> None:
    async with grpc_pod("pod") as endpoint, running_proxy(snapshot([grpc_route([endpoint])])) as proxy, \
            await proxy.client() as client:
        started = asyncio.get_running_loop().time()
        resp = await client.request("POST", "/test.Echo/Unary", [("Content-Type", "application/grpc")],
                                    body=b"\x00\x00\x00\x00\x01x")
        assert resp.status == 502
        assert asyncio.get_running_loop().time() - started < 3  # not the 60 s read timeout


@async_test
async def test_grpc_client_over_tls_alpn_to_an_h2c_pod() -> None:
    from test_h2_tls import tls_listener

    ca = trustme.CA()
    async with grpc_pod("pod-tls") as endpoint, running_proxy(snapshot([grpc_route([endpoint])])) as proxy:
        listener, port = await tls_listener(proxy.server, ca)
        try:
            creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
            async with aio.secure_channel(f"127.0.0.1:{port}", creds,
                                          options=[("grpc.ssl_target_name_override", "example.com")]) as channel:
                assert await channel.unary_unary("/test.Echo/Unary")(b"tls", timeout=10) == b"pod-tls:tls"
                replies = [m async for m in channel.unary_stream("/test.Echo/Stream")(b"5", timeout=10)]
                assert len(replies) == 5
        finally:
            listener.close()
            await listener.wait_closed()


@async_test
async def test_proxy_read_timeout_bounds_a_silent_call() -> None:
    from pyngress.model import ProxySettings

    async with grpc_pod("slow") as endpoint, \
            running_proxy(snapshot([grpc_route([endpoint])], settings=ProxySettings(proxy_read_timeout=0.3))) \
            as proxy, aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        started = asyncio.get_running_loop().time()
        with pytest.raises(aio.AioRpcError) as info:
            await channel.unary_unary("/test.Echo/Slow")(b"3", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # HTTP 504 from the proxy
        assert asyncio.get_running_loop().time() - started < 2.5
        assert await channel.unary_unary("/test.Echo/Slow")(b"0", timeout=10) == b"late"
