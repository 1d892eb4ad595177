"""Call the example greeter through pyngress: `python examples/grpc/client.py localhost:8080`.

An insecure channel speaks h2c with prior knowledge; the authority picks the Ingress host.
"""

from __future__ import annotations

import asyncio
import sys

from grpc import aio


async def main(target: str) -> None:
    options = [("grpc.default_authority", "grpc.example.com")]
    async with aio.insecure_channel(target, options=options) as channel:
        hello = channel.unary_unary("/demo.Greeter/Hello")
        for name in (b"ada", b"bob", b"cy", b"di"):
            print((await hello(name, timeout=5)).decode())  # alternates between the two pods
        async for message in channel.unary_stream("/demo.Greeter/Count")(b"3", timeout=5):
            print(message.decode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8080"))
