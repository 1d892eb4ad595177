"""Local echo pods for the manifests in this directory, so that `pyngress run -f examples/` has backends.

    terminal 1:  python examples/backends.py
    terminal 2:  pyngress run -f examples/ --http-port 8080
    terminal 3:  curl -H 'Host: shop.example.com' localhost:8080/api/x        # api, alternating pods
                 curl -H 'Host: shop.example.com' localhost:8080/             # web, alternating pods
                 curl -H 'Host: pr-7.preview.example.com' localhost:8080/     # web, via the wildcard host
                 curl -H 'Host: nowhere.example.org' localhost:8080/          # fallback (default backend)

Every pod answers with JSON describing the request it received, and names itself in the `X-Pod` header.
The addresses and ports are those of endpointslices.yaml. 127.0.0.2 is a loopback address on Linux; on
macOS add it first (`sudo ifconfig lo0 alias 127.0.0.2`) or that pod is skipped.
"""

from __future__ import annotations

import asyncio
import signal

from pyngress.runtime.echo import EchoServer, start_echo

PODS = [  # (pod name as in the EndpointSlice targetRef, address, port)
    ("web-6d9f7c-abcde", "127.0.0.1", 9001),
    ("web-6d9f7c-fghij", "127.0.0.2", 9001),
    ("api-5b8c4d-klmno", "127.0.0.1", 9002),
    ("api-5b8c4d-pqrst", "127.0.0.1", 9003),
    ("admin-7f6e5d-zabcd", "127.0.0.1", 9004),
    ("fallback-4c3b2a-efghi", "127.0.0.1", 9005),
    ("api-5b8c4d-uvwxy", "127.0.0.1", 9006),  # not ready in its EndpointSlice: should see no traffic
]


async def main() -> int:
    pods: list[EchoServer] = []
    for name, address, port in PODS:
        try:
            pods.append(await start_echo(name, address, port))
        except OSError as exc:
            print(f"skipped {name}: cannot listen on {address}:{port}: {exc.strerror or exc}")
    for pod in pods:
        print(f"{pod.pod:24} {pod.url}")
    print("echo pods running; Ctrl-C to stop")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for pod in pods:
        print(f"{pod.pod:24} served {pod.requests} requests on {pod.connections} connections")
        await pod.close()
    return 0 if pods else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
