"""Helpers for the layer 4 tests: raw TCP and UDP echo pods on 127.0.0.1 port 0, manifests for a Service and
its EndpointSlice, the tcp/udp services ConfigMaps, and a proxy whose stream listeners are serving."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from processes import free_port as free_port  # re-exported: the L4 tests take it from here

from pyngress.config import CompileOptions, compile_snapshot, parse_manifest
from pyngress.config.streams import StreamOptions
from pyngress.model import KubeObject, Snapshot
from pyngress.runtime import proxy_protocol
from pyngress.runtime.server import ProxyServer

TIMEOUT = 5.0


@dataclass
class TcpPod:
    """Echoes every byte back; on the client's EOF, finishes echoing and closes. With `proxy`, first reads a
    PROXY header and records it. `greeting`: sent on accept, followed at once by EOF (a half-closing server)."""

    name: str
    proxy: bool = False
    greeting: bytes = b""
    port: int = 0
    connections: int = 0
    headers: list[proxy_protocol.ProxyHeader] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)  # with a greeting: what each connection sent
    _server: asyncio.base_events.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def start(cls, name: str, **kwargs: Any) -> TcpPod:
        pod = cls(name, **kwargs)
        pod._server = await asyncio.start_server(pod._serve, "127.0.0.1", 0)
        pod.port = pod._server.sockets[0].getsockname()[1]
        return pod

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.connections += 1
        self.peers.append(writer.get_extra_info("peername")[:2])
        try:
            buffered = await self._read_header(reader) if self.proxy else b""
            if self.greeting:
                writer.write(self.greeting)
                writer.write_eof()
                self.received.append(buffered + await reader.read())
                return
            writer.write(buffered)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError, proxy_protocol.ProxyProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read_header(self, reader: asyncio.StreamReader) -> bytes:
        data = b""
        while (parsed := proxy_protocol.parse(data)) is None:
            chunk = await reader.read(1)
            if not chunk:
                raise ConnectionError("EOF before the PROXY header")
            data += chunk
        header, used = parsed
        self.headers.append(header)
        return data[used:]


class UdpPod(asyncio.DatagramProtocol):
    """Answers each datagram with `<name>:` + the datagram; records the peers it heard from."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def start(cls, name: str) -> UdpPod:
        loop = asyncio.get_running_loop()
        transport, pod = await loop.create_datagram_endpoint(lambda: cls(name), local_addr=("127.0.0.1", 0))
        pod.port = transport.get_extra_info("sockname")[1]
        return pod

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.peers.append((addr[0], addr[1]))
        assert self.transport is not None
        self.transport.sendto(self.name.encode() + b":" + data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- manifests --------------------------------------------------------------------------------------------


def service_manifests(name: str, ports: Sequence[int], *, namespace: str = "default", protocol: str = "TCP",
                      service_port: int = 5000, type_: str = "ClusterIP",
                      annotations: dict[str, str] | None = None, **spec: Any) -> list[dict[str, Any]]:
    """A Service with one port (number `service_port`, named "main") and one EndpointSlice with an endpoint per
    pod port: the slice's port is per endpoint in Kubernetes, so each pod gets its own slice here."""
    meta = {"name": name, "namespace": namespace, "annotations": annotations or {}}
    port = {"name": "main", "port": service_port, "protocol": protocol}
    spec = {"type": type_, "ports": [port], **spec}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
    slices = [{
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"{name}-{i}", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": name}},
        "ports": [{"name": "main", "port": port, "protocol": protocol}],
        "endpoints": [{"addresses": ["127.0.0.1"], "targetRef": {"kind": "Pod", "name": f"{name}-pod-{i}"}}],
    } for i, port in enumerate(ports)]
    return [svc, *slices]


def configmap(name: str, data: dict[str, str], namespace: str = "ingress") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


def build(docs: Sequence[dict[str, Any]], *, streams: StreamOptions | None = None, version: int = 1,
          **settings: str) -> Snapshot:
    """Compile manifests as file mode would; `settings` go into the controller ConfigMap (keys with _ for -)."""
    objects: list[KubeObject] = []
    if settings:
        docs = [*docs, configmap("pyngress", {k.replace("_", "-"): v for k, v in settings.items()})]
    for doc in docs:
        obj, problems = parse_manifest(doc)
        assert obj is not None and not problems, problems
        objects.append(obj)
    options = CompileOptions(streams=streams or StreamOptions(tcp_services_configmap="ingress/tcp-services",
                                                              udp_services_configmap="ingress/udp-services"))
    return compile_snapshot(objects, options, version=version)


def tcp_entry(pod_ports: Sequence[int], listen: int, flags: str = "", **settings: str) -> Snapshot:
    """Service default/db over `pod_ports`, served on `listen` by a tcp-services entry ("default/db:5000" +
    `flags`, e.g. ":PROXY")."""
    entry = configmap("tcp-services", {str(listen): f"default/db:5000{flags}"})
    return build([*service_manifests("db", pod_ports), entry], **settings)


@contextlib.asynccontextmanager
async def serving(snap: Snapshot, *, grace: float = 1.0) -> AsyncIterator[ProxyServer]:
    """A ProxyServer on 127.0.0.1 (HTTP on port 0) whose stream listeners are serving; drained on exit."""
    server = ProxyServer(snap, rng=random.Random(0))
    await server.listen("127.0.0.1", 0)
    await server.streams.settled()
    try:
        yield server
    finally:
        await server.drain(grace)


async def wait_for(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def tcp_round_trip(port: int, payload: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Connect (from `source`), send `payload`, half-close, read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
