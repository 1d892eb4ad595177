"""UDP services end to end: per-client flows, replies from the listen address, idle expiry, the bounded flow
table, proxy-stream-responses, a dead endpoint, and the kernel's SO_REUSEPORT hashing that keeps a client on
one worker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from harness import async_test
from l4_harness import TIMEOUT, UdpPod, build, configmap, free_port, service_manifests, serving, wait_for

from pyngress.config.streams import StreamOptions
from pyngress.model import Snapshot
from pyngress.runtime.l4.runtime import UdpSocketListener


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.inbox.put_nowait((data, (addr[0], addr[1])))

    async def ask(self, port: int, data: bytes) -> tuple[bytes, tuple[str, int]]:
        self.transport.sendto(data, ("127.0.0.1", port))
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)


@contextlib.asynccontextmanager
async def clients(count: int) -> AsyncIterator[list[Client]]:
    loop = asyncio.get_running_loop()
    made = [(await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0)))[1] for _ in range(count)]
    try:
        yield made
    finally:
        for c in made:
            c.transport.close()


def udp_snapshot(pods: list[UdpPod], listen: int, **settings: str) -> Snapshot:
    return build([*service_manifests("dns", [p.port for p in pods], protocol="UDP"),
                  configmap("udp-services", {str(listen): "default/dns:5000"})], **settings)


def flows(server: Any, listen: int) -> dict[Any, Any]:
    listener = server.streams.listeners[f"udp/{listen}"]
    assert isinstance(listener, UdpSocketListener)
    return listener.protocol.flows


@async_test
async def test_clients_are_kept_apart_and_replies_come_from_the_listen_address() -> None:
    pods = [await UdpPod.start("pod-a"), await UdpPod.start("pod-b")]
    listen = free_port(socket.SOCK_DGRAM)
    try:
        async with serving(udp_snapshot(pods, listen)) as server, clients(4) as cs:
            for round_ in range(3):  # the same client keeps its flow: same pod, same peer address at the pod
                answers = await asyncio.gather(*(c.ask(listen, b"q%d-%d" % (i, round_)) for i, c in enumerate(cs)))
                for i, (data, source) in enumerate(answers):
                    assert data.endswith(b":q%d-%d" % (i, round_))
                    assert source == ("127.0.0.1", listen)
                    assert data.split(b":")[0] == answers[i][0].split(b":")[0]
            assert len(flows(server, listen)) == 4
            peers = [set(p.peers) for p in pods]
            assert [len(s) for s in peers] == [2, 2]  # round robin over flows; one peer per flow
            assert sum(len(p.peers) for p in pods) == 12
    finally:
        for p in pods:
            p.close()


@async_test
async def test_idle_flows_expire_and_a_new_datagram_opens_a_new_flow() -> None:
    pod = await UdpPod.start("pod-a")
    listen = free_port(socket.SOCK_DGRAM)
    try:
        async with serving(udp_snapshot([pod], listen, udp_flow_timeout="0.2")) as server, clients(1) as (c,):
            assert (await c.ask(listen, b"one"))[0] == b"pod-a:one"
            assert len(flows(server, listen)) == 1
            await wait_for(lambda: not flows(server, listen), "the flow to expire", timeout=3.0)
            assert (await c.ask(listen, b"two"))[0] == b"pod-a:two"
            assert len(set(pod.peers)) == 2  # a new socket towards the pod
            assert server.streams.stats.get(pod.peers[0][0] + f":{pod.port}").inflight == 1
    finally:
        pod.close()


@async_test
async def test_the_flow_table_is_bounded_and_evicts_the_least_recently_active() -> None:
    pod = await UdpPod.start("pod-a")
    listen = free_port(socket.SOCK_DGRAM)
    try:
        async with serving(udp_snapshot([pod], listen, udp_flow_table_size="2")) as server, clients(3) as cs:
            first = cs[0].transport.get_extra_info("sockname")[:2]
            for c in cs:
                await c.ask(listen, b"x")
            table = flows(server, listen)
            assert len(table) == 2 and first not in table
            assert (await cs[0].ask(listen, b"again"))[0] == b"pod-a:again"  # evicted, not refused
            assert len(table) == 2
    finally:
        pod.close()


@async_test
async def test_proxy_stream_responses_ends_a_flow_after_its_replies() -> None:
    pod = await UdpPod.start("pod-a")
    listen = free_port(socket.SOCK_DGRAM)
    try:
        async with serving(udp_snapshot([pod], listen, proxy_stream_responses="1")) as server, clients(1) as (c,):
            assert (await c.ask(listen, b"query"))[0] == b"pod-a:query"
            await wait_for(lambda: not flows(server, listen), "the flow to end after one reply")
    finally:
        pod.close()


@async_test
async def test_a_dead_endpoint_costs_one_datagram() -> None:
    pod = await UdpPod.start("pod-live")
    dead = free_port(socket.SOCK_DGRAM)  # nothing listens: the kernel answers ICMP port unreachable
    listen = free_port(socket.SOCK_DGRAM)
    snap = build([*service_manifests("dns", [dead, pod.port], protocol="UDP"),
                  configmap("udp-services", {str(listen): "default/dns:5000"})])
    try:
        async with serving(snap), clients(2) as cs:
            for c in cs:
                for attempt in range(3):  # the client retries, as DNS resolvers do
                    c.transport.sendto(b"hello", ("127.0.0.1", listen))
                    try:
                        data, _ = await asyncio.wait_for(c.inbox.get(), 0.5)
                        break
                    except TimeoutError:
                        assert attempt < 2, "the dead endpoint was not left"
                assert data == b"pod-live:hello"
    finally:
        pod.close()


def test_linux_reuseport_keeps_each_udp_client_on_one_socket() -> None:
    """What `--workers N` relies on for UDP: with SO_REUSEPORT the kernel picks the socket by a hash of the
    4-tuple, so all datagrams of one client address reach the same worker (and its flow)."""
    listeners = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", listeners[0].getsockname()[1] if listeners else 0))
        s.settimeout(TIMEOUT)
        listeners.append(s)
    port = listeners[0].getsockname()[1]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(24)]
    try:
        for s in senders:
            s.bind(("127.0.0.1", 0))
            for _ in range(5):
                s.sendto(b"x", ("127.0.0.1", port))
        where: dict[tuple[str, int], set[int]] = {}
        for _ in range(24 * 5):
            for i, listener in enumerate(listeners):
                listener.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    _, addr = listener.recvfrom(16)
                    where.setdefault(addr, set()).add(i)
        assert len(where) == 24
        assert all(len(sockets) == 1 for sockets in where.values())  # one client, one socket
        assert {next(iter(s)) for s in where.values()} == {0, 1}  # and both sockets get clients
    finally:
        for s in [*listeners, *senders]:
            s.close()


@async_test
async def test_a_udp_load_balancer_port_comes_and_goes_with_its_service() -> None:
    pod = await UdpPod.start("pod-a")
    listen = free_port(socket.SOCK_DGRAM)
    options = StreamOptions(serve_load_balancer_services=True, lb_port_offset=listen - 53)
    docs = service_manifests("dns", [pod.port], protocol="UDP", service_port=53, type_="LoadBalancer")
    try:
        async with serving(build(docs, streams=options)) as server, clients(1) as (c,):
            assert (await c.ask(listen, b"q"))[0] == b"pod-a:q"
            listener = server.streams.listeners[f"udp/{listen}"]
            assert isinstance(listener, UdpSocketListener) and len(listener.protocol.flows) == 1
            server.install(build(docs[1:], streams=options, version=2))  # the Service is deleted
            assert f"udp/{listen}" not in server.streams.listeners
            await wait_for(lambda: not listener.protocol.flows, "the flows to end with their listener")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the port is free again
                probe.bind(("127.0.0.1", listen))
    finally:
        pod.close()
