"""PROXY protocol on TCP services: received from a load balancer in front, sent to the pod, both at once."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from harness import async_test
from l4_harness import (
    TIMEOUT,
    TcpPod,
    build,
    configmap,
    service_manifests,
    serving,
    tcp_entry,
    tcp_round_trip,
    wait_for,
)
from processes import free_port

from pyngress.config.streams import StreamOptions
from pyngress.runtime import proxy_protocol
from pyngress.runtime.proxy_protocol import ProxyHeader


@pytest.mark.parametrize("sent", ["PROXY", "PROXYv2"])
@async_test
async def test_the_pod_sees_the_real_client_address(sent: str) -> None:
    pod = await TcpPod.start("db-0", proxy=True)
    listen = free_port()
    snap = tcp_entry([pod.port], listen, f"::{sent}")
    assert snap.streams[0].send_proxy == (1 if sent == "PROXY" else 2)
    try:
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen, local_addr=("127.0.0.3", 0))
            client_port = writer.get_extra_info("sockname")[1]
            writer.write(b"payload")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"payload"  # header stripped by the pod
            writer.close()
            await writer.wait_closed()
            assert pod.headers == [ProxyHeader("127.0.0.3", client_port, "127.0.0.1", listen)]
    finally:
        await pod.close()


@pytest.mark.parametrize("received", ["v1", "v2"])
@async_test
async def test_a_received_header_is_passed_on_to_the_pod(received: str) -> None:
    pod = await TcpPod.start("db-0", proxy=True)
    listen = free_port()
    snap = tcp_entry([pod.port], listen, ":PROXY:PROXY")
    encode = proxy_protocol.encode_v1 if received == "v1" else proxy_protocol.encode_v2
    header = encode("203.0.113.7", 40000, "198.51.100.1", 443)
    try:
        async with serving(snap):
            # the header split over two writes: the proxy waits for all of it
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.write(header[:10])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(header[10:] + b"hello")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"hello"
            writer.close()
            await writer.wait_closed()
            assert pod.headers == [ProxyHeader("203.0.113.7", 40000, "198.51.100.1", 443)]
    finally:
        await pod.close()


@async_test
async def test_received_header_without_sending_is_stripped() -> None:
    pod = await TcpPod.start("db-0")
    listen = free_port()
    snap = tcp_entry([pod.port], listen, ":PROXY")
    try:
        async with serving(snap):
            header = proxy_protocol.encode_v2("2001:db8::1", 5555, "2001:db8::2", 443)
            assert await tcp_round_trip(listen, header + b"data") == b"data"
            assert pod.headers == [] and pod.connections == 1
    finally:
        await pod.close()


@async_test
async def test_a_malformed_header_closes_the_connection_before_any_pod_is_used() -> None:
    pod = await TcpPod.start("db-0")
    listen = free_port()
    snap = tcp_entry([pod.port], listen, ":PROXY")
    try:
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            assert pod.connections == 0
    finally:
        await pod.close()


@async_test
async def test_a_missing_header_times_out() -> None:
    pod = await TcpPod.start("db-0")
    listen = free_port()
    snap = tcp_entry([pod.port], listen, ":PROXY",
                 proxy_protocol_header_timeout="0.2")
    try:
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.write(b"PROXY TCP4 ")  # a prefix of a valid header, and then nothing
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            assert pod.connections == 0
    finally:
        await pod.close()


@async_test
async def test_external_traffic_policy_local_keeps_the_client_address_via_proxy() -> None:
    pod = await TcpPod.start("game-0", proxy=True)
    listen = free_port()
    docs = service_manifests("game", [pod.port], service_port=7777, type_="LoadBalancer",
                             annotations={"pyngress.io/send-proxy-protocol": "v2"}, externalTrafficPolicy="Local")
    snap = build(docs, streams=StreamOptions(serve_load_balancer_services=True, lb_port_offset=listen - 7777))
    assert not snap.problems and snap.streams[0].external_traffic_policy == "Local"
    try:
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen, local_addr=("127.0.0.9", 0))
            writer.write(b"move")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"move"
            assert pod.headers[0].source_addr == "127.0.0.9"
            assert pod.headers[0].source_port == writer.get_extra_info("sockname")[1]
            writer.close()
            await writer.wait_closed()
    finally:
        await pod.close()


@async_test
async def test_an_ipv6_pod_behind_an_ipv4_listener() -> None:
    received: list[bytes] = []

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())
        writer.close()

    server = await asyncio.start_server(pod, "::1", 0)
    try:
        pod_port = server.sockets[0].getsockname()[1]
        listen = free_port()
        docs = service_manifests("db", [pod_port])
        docs[1]["addressType"], docs[1]["endpoints"][0]["addresses"] = "IPv6", ["::1"]
        snap = build([*docs, configmap("tcp-services", {str(listen): "default/db:5000::PROXY"})])
        assert [e.key for e in snap.streams[0].backend.endpoints] == [f"[::1]:{pod_port}"]
        async with serving(snap):
            assert await tcp_round_trip(listen, b"six") == b""
            await wait_for(lambda: bool(received), "the pod to read")
            parsed = proxy_protocol.parse(received[0])
            assert parsed is not None and received[0][parsed[1]:] == b"six"
            # the header describes the client's connection (IPv4), not ours to the pod (IPv6)
            assert (parsed[0].source_addr, parsed[0].dest_addr, parsed[0].dest_port) == (
                "127.0.0.1", "127.0.0.1", listen)
    finally:
        server.close()
        await server.wait_closed()
