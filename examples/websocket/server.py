"""Two WebSocket echo pods for examples/websocket/websocket.yaml: 127.0.0.1:9101 and :9102 (Ctrl-C stops)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def echo(pod: str):  # type: ignore[no-untyped-def]
    async def handle(ws: ServerConnection) -> None:
        await ws.send(f"connected to {pod}")
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass

    return handle


async def main() -> None:
    async with serve(echo("chat-1"), "127.0.0.1", 9101), serve(echo("chat-2"), "127.0.0.1", 9102):
        print("chat-1 on 127.0.0.1:9101, chat-2 on 127.0.0.1:9102")
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
