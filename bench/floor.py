"""The floor of the stack: the least an HTTP/1.1 reverse proxy on uvloop + httptools can do per request.

Not pyngress. A deliberately minimal proxy that does only what any proxy must: parse the request with
httptools (callbacks for the URL and headers), write one upstream head with X-Forwarded-For, reuse pooled
keep-alive upstream connections, find the end of the response head, read its Content-Length with one scan and
forward the response bytes raw. No routing, no balancing, no validation of the response, no metrics, no limits.

Its throughput against nginx, measured by `bench/run.py` in the same run, is the ceiling that any pyngress hot
path written in Python on this stack can approach, on this machine:

    python bench/run.py --pyngress-cmd "python bench/floor.py"

It takes the same command line as `pyngress run` (it reads the backend port from the EndpointSlice that
bench/run.py writes) so that run.py can start it in pyngress's place. Only for bench/run.py's manifests.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import deque
from pathlib import Path
from typing import Any

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.transport: Any = None
        self.client: Client | None = None
        self.remaining = -1  # body bytes still to forward; -1 while waiting for a head
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        assert client is not None
        if self.remaining < 0:
            data = self.buf + data if self.buf else data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            self.buf = b""
            at = data.find(b"ontent-Length:", 0, end)  # nginx spells it so; the floor does not care for others
            stop = data.find(b"\r\n", at)
            self.remaining = int(data[at + 14:stop]) + end + 4
        self.remaining -= len(data)
        client.transport.write(data)
        if self.remaining == 0:
            self.remaining = -1
            self.client = None
            self.pool.append(self)
            client.done()


class Client(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, backend: tuple[str, int], pool: list[Upstream]) -> None:
        self.loop, self.backend, self.pool = loop, backend, pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.lines: list[bytes] = []
        self.queue: deque[bytes] = deque()
        self.busy = False
        self.peer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[0].encode()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.lines += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        lines, self.lines = self.lines, []
        head = b"".join([self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n", *lines,
                         b"X-Forwarded-For: ", self.peer, b"\r\n\r\n"])
        self.queue.append(head)
        if not self.busy:
            self.send()

    def send(self) -> None:
        head = self.queue.popleft()
        self.busy = True
        if self.pool:
            upstream = self.pool.pop()
            upstream.client = self
            upstream.transport.write(head)
        else:
            self.loop.create_task(self.connect(head))

    async def connect(self, head: bytes) -> None:
        _, upstream = await self.loop.create_connection(lambda: Upstream(self.pool), *self.backend)
        assert isinstance(upstream, Upstream)
        upstream.client = self
        upstream.transport.write(head)

    def done(self) -> None:
        self.busy = False
        if self.queue:
            self.send()


async def serve(port: int, backend: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    pool: list[Upstream] = []
    server = await loop.create_server(lambda: Client(loop, backend, pool), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run"])
    p.add_argument("-f", dest="manifests", type=Path, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--https-port", type=int, default=0)
    args = p.parse_args()
    text = (args.manifests / "endpointslice.yaml").read_text()
    match = re.search(r"port: (\d+)", text)
    assert match, "no backend port in the EndpointSlice"
    uvloop.run(serve(args.http_port, ("127.0.0.1", int(match.group(1)))))


if __name__ == "__main__":
    main()
