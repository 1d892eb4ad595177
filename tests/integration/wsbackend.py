"""WebSocket pods for the tests: a `websockets` echo server on 127.0.0.1, port 0, that names itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pyngress.model import Endpoint


class WsEcho:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.sessions = 0
        self.open = 0
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.messages: list[str | bytes] = []  # every message received
        self.close_codes: list[int | None] = []  # per finished session: the close status the pod received
        self._server: Server | None = None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, name=self.name)

    async def _handle(self, ws: ServerConnection) -> None:
        self.sessions += 1
        self.open += 1
        self.paths.append(ws.request.path if ws.request is not None else "")
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()} if ws.request else {})
        try:
            await ws.send(f"hello from {self.name}")
            async for message in ws:
                self.messages.append(message)
                await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            received = ws.protocol.close_rcvd
            self.close_codes.append(received.code if received is not None else None)
            self.open -= 1


@contextlib.asynccontextmanager
async def ws_echo(name: str = "ws-0", **kwargs: object) -> AsyncIterator[WsEcho]:
    pod = WsEcho(name)
    async with serve(pod._handle, "127.0.0.1", 0, max_size=None, **kwargs) as server:  # type: ignore[arg-type]
        pod._server = server
        pod.port = server.sockets[0].getsockname()[1]
        yield pod
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
