"""TCP services end to end: tcp-services ConfigMap entries compiled into the Snapshot, a real ProxyServer, raw
echo pods on 127.0.0.1 (see l4_harness)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import Iterator

from harness import async_test, refused_port
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


def _payload(size: int) -> bytes:
    block = hashlib.sha256(b"l4").digest() * 2048
    return (block * (size // len(block) + 1))[:size]


@async_test
async def test_one_megabyte_round_trip_through_a_configmap_entry() -> None:
    pod = await TcpPod.start("db-0")
    listen = free_port()
    snap = tcp_entry([pod.port], listen)
    assert [s.listen_key for s in snap.streams] == [f"tcp/{listen}"] and not snap.problems
    try:
        async with serving(snap):
            data = _payload(1 << 20)
            assert await tcp_round_trip(listen, data) == data  # half-close from the client: all echoed, then EOF
    finally:
        await pod.close()


@async_test
async def test_service_port_by_name_and_half_close_from_the_pod() -> None:
    # the pod greets, closes its sending side at once, and still reads what the client sends afterwards
    pod = await TcpPod.start("db-0", greeting=b"hello")
    listen = free_port()
    entry = configmap("tcp-services", {str(listen): "default/db:main"})  # the Service port by name
    snap = build([*service_manifests("db", [pod.port]), entry])
    try:
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"hello"  # the pod's EOF reached us
            writer.write(b"after your EOF")  # our direction is still open
            writer.write_eof()
            await wait_for(lambda: pod.received == [b"after your EOF"], "the pod to read after its own EOF")
            writer.close()
            await writer.wait_closed()
    finally:
        await pod.close()


@async_test
async def test_concurrent_connections_spread_round_robin_over_pods() -> None:
    pods = [await TcpPod.start(f"db-{i}") for i in range(3)]
    listen = free_port()
    snap = tcp_entry([p.port for p in pods], listen)
    try:
        async with serving(snap):
            messages = [b"connection %d " % i * 100 for i in range(60)]
            answers = await asyncio.gather(*(tcp_round_trip(listen, m) for m in messages))
            assert answers == messages
            assert [p.connections for p in pods] == [20, 20, 20]
    finally:
        for p in pods:
            await p.close()


@async_test
async def test_a_dead_endpoint_is_skipped_on_connect() -> None:
    pod = await TcpPod.start("db-live")
    listen = free_port()
    with refused_port() as dead:
        snap = tcp_entry([dead, pod.port], listen)
        try:
            async with serving(snap) as server:
                for i in range(6):  # round robin offers the dead endpoint every other time: each is retried
                    assert await tcp_round_trip(listen, b"ping %d" % i) == b"ping %d" % i
                assert pod.connections == 6
                assert server.streams.stats.get(f"127.0.0.1:{dead}").inflight == 0
                assert server.streams.stats.get(f"127.0.0.1:{dead}").requests >= 3  # it was tried, and failed
        finally:
            await pod.close()


@async_test
async def test_no_endpoint_accepting_resets_the_client() -> None:
    listen = free_port()
    with refused_port() as dead:
        snap = tcp_entry([dead], listen)
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@async_test
async def test_client_ip_affinity_keeps_each_address_on_one_pod() -> None:
    pods = [await TcpPod.start(f"db-{i}") for i in range(3)]
    listen = free_port()
    docs = service_manifests("db", [p.port for p in pods], sessionAffinity="ClientIP",
                             sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})
    snap = build([*docs, configmap("tcp-services", {str(listen): "default/db:5000"})])
    assert snap.streams[0].affinity.kind == "client-ip"
    try:
        async with serving(snap):
            chosen = {}
            for source in [f"127.0.0.{n}" for n in range(1, 13)]:
                before = [p.connections for p in pods]
                for _ in range(3):
                    assert await tcp_round_trip(listen, b"x", source=source) == b"x"
                grew = [i for i, p in enumerate(pods) if p.connections != before[i]]
                assert len(grew) == 1 and pods[grew[0]].connections - before[grew[0]] == 3, (source, grew)
                chosen[source] = grew[0]
            # addresses are placed by hashing: all 12 on one of 3 pods has a chance of 3 in 3**12
            assert len(set(chosen.values())) >= 2
    finally:
        for p in pods:
            await p.close()


@async_test
async def test_idle_connection_is_closed_after_proxy_stream_timeout() -> None:
    pod = await TcpPod.start("db-0")
    listen = free_port()
    snap = tcp_entry([pod.port], listen,
                 proxy_stream_timeout="0.3")
    try:
        async with serving(snap) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the proxy, not by us
            assert asyncio.get_running_loop().time() - started >= 0.3
            await wait_for(lambda: not server.streams.connections, "the relay to be forgotten")
            writer.close()
            await writer.wait_closed()
    finally:
        await pod.close()


@async_test
async def test_least_conn_sends_a_new_connection_to_the_idler_pod() -> None:
    pods = [await TcpPod.start(f"db-{i}") for i in range(2)]
    listen = free_port()
    docs = service_manifests("db", [p.port for p in pods], annotations={"pyngress.io/load-balance": "least_conn"})
    snap = build([*docs, configmap("tcp-services", {str(listen): "default/db:5000"})])
    assert snap.streams[0].balance.algorithm == "least_conn"
    try:
        async with serving(snap):
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)  # held open on one pod
            writer.write(b"hold")
            assert await reader.readexactly(4) == b"hold"
            busy = next(i for i, p in enumerate(pods) if p.connections == 1)
            for _ in range(4):  # each short connection goes to the other pod: it has 0 open, the busy one 1
                assert await tcp_round_trip(listen, b"short") == b"short"
            assert pods[busy].connections == 1 and pods[1 - busy].connections == 4
            writer.close()
            await writer.wait_closed()
    finally:
        for p in pods:
            await p.close()


@contextlib.contextmanager
def stuck_listener() -> Iterator[int]:
    """A listener whose accept queue is full: Linux drops further SYNs, so connecting to it hangs."""
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    fillers = []
    try:
        for _ in range(2):
            s = socket.socket()
            fillers.append(s)
            s.setblocking(False)
            s.connect_ex(stuck.getsockname())
        yield stuck.getsockname()[1]
    finally:
        for s in [stuck, *fillers]:
            s.close()


@async_test
async def test_bytes_sent_while_connecting_are_kept_across_a_retry() -> None:
    pod = await TcpPod.start("db-live")
    listen = free_port()
    with stuck_listener() as stuck:
        snap = tcp_entry([stuck, pod.port], listen, proxy_connect_timeout="0.3")
        try:
            async with serving(snap) as server:
                data = _payload(1 << 20)  # more than the 256 KiB kept before reading pauses
                answers = [await tcp_round_trip(listen, data) for _ in range(2)]  # one of them meets the stuck one
                assert answers == [data, data]
                assert server.streams.stats.get(f"127.0.0.1:{stuck}").requests >= 1
        finally:
            await pod.close()


@async_test
async def test_a_connect_that_hangs_times_out_and_the_next_endpoint_is_used() -> None:
    pod = await TcpPod.start("db-live")
    listen = free_port()
    with stuck_listener() as stuck:
        snap = tcp_entry([stuck, pod.port], listen, proxy_connect_timeout="0.3")
        try:
            async with serving(snap) as server:
                started = asyncio.get_running_loop().time()
                for i in range(2):  # round robin offers the stuck endpoint to one of these first
                    assert await tcp_round_trip(listen, b"n%d" % i) == b"n%d" % i
                assert asyncio.get_running_loop().time() - started >= 0.3  # someone waited for the timeout
                assert server.streams.stats.get(f"127.0.0.1:{stuck}").requests >= 1
                assert pod.connections == 2
        finally:
            await pod.close()
