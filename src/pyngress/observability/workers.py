"""Where the admin listener gets its data: this process (`LocalProvider`), or every worker (`WorkersProvider`).

With `--workers N` each worker counts its own traffic. Rather than prometheus-client's multiprocess mode
(one mmap'd file per process and metric, written through prometheus-client's own value objects on every
request: exactly the per-request cost the recorder avoids), the parent process runs the admin listener and,
for each scrape, asks every worker for its state over a socketpair made before the fork, then merges
(`export.merge`): counters add up, so one scrape shows the whole picture, and a worker that died simply
stops contributing (a restarted one would start from zero, as a restarted nginx worker does).

Messages on the pipe: a 4-byte big-endian length, then JSON. The parent sends a command ("state" or
"config"), the worker answers. One outstanding request per worker (a lock), with a timeout: a worker that
does not answer within `ASK_TIMEOUT` is left out of that scrape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pyngress.observability.export import State, worker_state
from pyngress.observability.status import config_document, routes_of

if TYPE_CHECKING:
    from pyngress.runtime.server import ProxyServer

log = logging.getLogger("pyngress.admin")
ASK_TIMEOUT = 2.0
_LENGTH = struct.Struct(">I")


def local_state(server: ProxyServer, ready: bool = True) -> State:
    return {**worker_state(server, ready=ready), "routes": routes_of(server.snapshot)}


class LocalProvider:
    """The admin listener inside the one worker (`--workers 1`, `pyngress demo`, tests)."""

    def __init__(self, server: ProxyServer, synced: Callable[[], bool] = lambda: True) -> None:
        self.server = server
        self.synced = synced

    async def states(self) -> list[State]:
        return [local_state(self.server, self.synced())]

    async def config(self) -> Any:
        return config_document(self.server.snapshot)

    def alive(self) -> bool:
        return True


async def _send(writer: asyncio.StreamWriter, doc: Any) -> None:
    data = json.dumps(doc).encode()
    writer.write(_LENGTH.pack(len(data)) + data)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> Any:
    size, = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return json.loads(await reader.readexactly(size))


async def answer_parent(sock: socket.socket, server: ProxyServer, synced: Callable[[], bool]) -> None:
    """In a worker: answer the parent's questions until the pipe closes (or the task is cancelled)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        while True:
            try:
                command = await _receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if command == "config":
                await _send(writer, config_document(server.snapshot))
            else:
                await _send(writer, local_state(server, synced()))
    finally:
        writer.close()


class WorkersProvider:
    """In the parent: gathers from every worker. `socks` are the parent's ends of the socketpairs."""

    def __init__(self, socks: Sequence[socket.socket], alive: Callable[[], bool] = lambda: True) -> None:
        self._socks = list(socks)
        self._streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
        self._locks: list[asyncio.Lock] = []
        self._alive = alive

    async def start(self) -> None:
        for sock in self._socks:
            self._streams.append(await asyncio.open_connection(sock=sock))
            self._locks.append(asyncio.Lock())

    def close(self) -> None:
        for stream in self._streams:
            if stream is not None:
                stream[1].close()

    async def _ask(self, i: int, command: str) -> Any:
        stream = self._streams[i]
        if stream is None:
            return None
        async with self._locks[i]:
            try:
                await _send(stream[1], command)
                return await asyncio.wait_for(_receive(stream[0]), ASK_TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                log.warning("worker %d did not answer the admin listener (%r); leaving it out", i, exc)
                stream[1].close()
                self._streams[i] = None  # its answer may still arrive: never read this pipe again
                return None

    async def states(self) -> list[State]:
        answers = await asyncio.gather(*(self._ask(i, "state") for i in range(len(self._streams))))
        return [a for a in answers if a is not None]

    async def config(self) -> Any:
        for i in range(len(self._streams)):
            answer = await self._ask(i, "config")
            if answer is not None:
                return answer
        return None

    def alive(self) -> bool:
        return self._alive()
