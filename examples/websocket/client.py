"""Talk to the example chat pods through pyngress: `python examples/websocket/client.py ws://localhost:8080/chat`."""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.client import connect


async def main(url: str) -> None:
    for _ in range(2):  # two connections: round robin puts them on different pods
        async with connect(url) as ws:
            print(await ws.recv())
            await ws.send("hello through pyngress")
            print("echo:", await ws.recv())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:8080/chat"))
