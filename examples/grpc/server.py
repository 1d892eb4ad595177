"""Two gRPC pods for examples/grpc/grpc.yaml: 127.0.0.1:50051 and :50052, no protobuf code needed.

Service `demo.Greeter`, messages are raw bytes: `Hello` (unary) answers "hello <name> from <pod>", `Count`
(server streaming) sends n numbered messages. Ctrl-C stops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc import aio

PODS = [("greeter-1", 50051), ("greeter-2", 50052)]


def handlers(pod: str) -> grpc.GenericRpcHandler:
    async def hello(name: bytes, context: aio.ServicerContext) -> bytes:
        return b"hello %s from %s" % (name, pod.encode())

    async def count(n: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(int(n)):
            yield b"%s: %d" % (pod.encode(), i)

    return grpc.method_handlers_generic_handler("demo.Greeter", {
        "Hello": grpc.unary_unary_rpc_method_handler(hello),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    })


async def main() -> None:
    servers = []
    for pod, port in PODS:
        server = aio.server()
        server.add_generic_rpc_handlers((handlers(pod),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)
        print(f"{pod} on 127.0.0.1:{port}")
    await asyncio.gather(*(s.wait_for_termination() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
