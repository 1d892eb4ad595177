"""The Autobahn WebSocket cases (run by kosoku) against a `websockets` echo pod, direct and through the proxy.

`compare(cases)` runs the same cases twice, straight to the pod and through a ProxyServer in front of it,
and returns both sets of results by case id. A proxy that only tunnels bytes must not make any case fail
that passes direct. Used by tests/integration/test_websocket_autobahn.py (a subset) and by
`python bench/autobahn.py` (the whole suite, a few minutes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import route, running_proxy, service, snapshot
from kosoku import FailureError, run_fuzzingclient
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pyngress.model import Endpoint


async def _echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def _run(url: str, cases: Sequence[str] | None, concurrency: int) -> dict[str, Any]:
    try:
        results = await run_fuzzingclient(url, cases=cases, concurrency=concurrency)
    except FailureError as exc:  # some case did not pass: the results are on the error
        results = exc.results
    return {r.case_id: r for r in results}


async def compare(cases: Sequence[str] | None, concurrency: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """(direct, proxied) results by case id."""
    async with serve(_echo, "127.0.0.1", 0, max_size=None) as pod:
        port = pod.sockets[0].getsockname()[1]
        svc = service("autobahn", [Endpoint("127.0.0.1", port)])
        async with running_proxy(snapshot([route(svc)])) as proxy:
            direct = await _run(f"ws://127.0.0.1:{port}", cases, concurrency)
            proxied = await _run(f"ws://127.0.0.1:{proxy.port}", cases, concurrency)
    return direct, proxied
