"""runtime.relay: bytes both ways unchanged, back-pressure on a slow reader, half-close passed on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket

from harness import async_test, pattern

from pyngress.model import Endpoint
from pyngress.runtime.relay import Relay


async def relayed_pair(handler: object) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, set[Relay],
                                                 asyncio.base_events.Server]:
    """A pod running `handler`, and a client connected to it through a Relay (as the HTTPS listener does)."""
    pod = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    endpoint = Endpoint("127.0.0.1", pod.sockets[0].getsockname()[1])
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setblocking(False)
    relays: set[Relay] = set()
    loop = asyncio.get_running_loop()
    connecting = asyncio.create_task(asyncio.open_connection("127.0.0.1", listening.getsockname()[1]))
    accepted, _ = await loop.sock_accept(listening)
    listening.close()
    relay = Relay(relays.discard)
    relays.add(relay)
    await relay.start(accepted, endpoint, 5.0)
    reader, writer = await connecting
    return reader, writer, relays, pod


@async_test
async def test_large_transfer_both_ways_and_half_close() -> None:
    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF, passed on by the relay
        writer.write(hashlib.sha256(data).hexdigest().encode() + pattern(3 << 20))
        await writer.drain()
        writer.close()

    reader, writer, relays, server = await relayed_pair(pod)
    try:
        upload = pattern(2 << 20)
        writer.write(upload)
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10.0)
        assert answer[:64] == hashlib.sha256(upload).hexdigest().encode()
        assert answer[64:] == pattern(3 << 20)
        deadline = asyncio.get_running_loop().time() + 5
        while relays and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert not relays  # both directions ended: the relay closed itself
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


@async_test
async def test_slow_reader_pauses_the_pod() -> None:
    sent = 0

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            for _ in range(256):  # up to 64 MiB, unless back-pressure stops us
                writer.write(b"x" * 262144)
                await writer.drain()
                sent += 262144
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    _, writer, relays, server = await relayed_pair(pod)
    try:
        await asyncio.sleep(0.3)  # the client reads nothing: what the pod managed to send must stay bounded
        assert sent < 32 << 20, sent
        for relay in list(relays):
            relay.abort()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
