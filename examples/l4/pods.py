"""Local pods for the TCP and UDP services of this directory (addresses as in endpointslices.yaml).

    terminal 1:  python examples/l4/pods.py
    terminal 2:  pyngress run -f examples/l4 --tcp-services-configmap ingress/tcp-services \\
                     --udp-services-configmap ingress/udp-services --serve-load-balancer-services \\
                     --lb-port-offset 10000
    terminal 3:  echo hello | nc -q1 127.0.0.1 5432        # postgres-0, then postgres-1: round robin
                 echo hello | nc -q1 127.0.0.1 6432        # the pod reports your address from a PROXY header
                 echo hello | nc -u -q1 127.0.0.1 5353     # UDP, answered from port 5353
                 echo hello | nc -q1 127.0.0.1 17777       # the LoadBalancer Service's TCP port (+ offset)

Each TCP pod answers every line with `<pod> saw <client address>: <line>`; the client address is the one in
the PROXY header when the connection starts with one, else the peer's (which is pyngress). The UDP pods
answer each datagram the same way. 127.0.0.2 is a loopback address on Linux; on macOS run
`sudo ifconfig lo0 alias 127.0.0.2` first or that pod is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from pyngress.runtime import proxy_protocol

TCP_PODS = [("postgres-0", "127.0.0.1", 9101), ("postgres-1", "127.0.0.2", 9101), ("game-0", "127.0.0.1", 9777)]
UDP_PODS = [("dns-0", "127.0.0.1", 9153), ("game-0", "127.0.0.1", 9777)]


async def serve_tcp(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = "%s:%d" % writer.get_extra_info("peername")[:2]
    data = await reader.read(4096)
    with contextlib.suppress(proxy_protocol.ProxyProtocolError):
        parsed = proxy_protocol.parse(data) if data[:1] in (b"P", b"\r") else None
        if parsed is not None and not parsed[0].local:
            peer = f"{parsed[0].source_addr}:{parsed[0].source_port} (from a PROXY header)"
            data = data[parsed[1]:]
    while data:
        for line in data.decode(errors="replace").splitlines():
            writer.write(f"{name} saw {peer}: {line}\n".encode())
        await writer.drain()
        data = await reader.read(4096)
    writer.close()


class UdpPod(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, int]) -> None:
        self.transport.sendto(f"{self.name} saw {addr[0]}:{addr[1]}: ".encode() + data, addr)


async def main() -> None:
    loop = asyncio.get_running_loop()
    for name, address, port in TCP_PODS:
        try:
            await asyncio.start_server(lambda r, w, n=name: serve_tcp(n, r, w), address, port)
            print(f"{name}: tcp {address}:{port}")
        except OSError as exc:
            print(f"skipped {name} (tcp {address}:{port}): {exc.strerror or exc}")
    for name, address, port in UDP_PODS:
        await loop.create_datagram_endpoint(lambda n=name: UdpPod(n), local_addr=(address, port))
        print(f"{name}: udp {address}:{port}")
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
