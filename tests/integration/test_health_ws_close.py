"""`pyngress run` as a real process: SIGTERM gives open WebSockets a close frame 1001 (Going Away) on both ends
(issue 7), then the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from tests.integration.processes import free_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from wsbackend import ws_echo

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {{name: chat, namespace: shop}}
spec:
  ports: [{{name: ws, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: chat-1, namespace: shop, labels: {{kubernetes.io/service-name: chat}}}}
addressType: IPv4
ports: [{{name: ws, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: chat, namespace: shop}}
spec:
  ingressClassName: pyngress
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: chat, port: {{name: ws}}}}}}}}
"""
GRACE_PERIOD = 0.5


def test_sigterm_sends_open_websockets_a_going_away_close_and_exits_0(tmp_path: Path) -> None:
    asyncio.run(_sigterm_closes_websockets(tmp_path))


async def _sigterm_closes_websockets(tmp_path: Path) -> None:
    async with ws_echo("chat-0") as pod:
        (tmp_path / "all.yaml").write_text(MANIFESTS.format(port=pod.port))
        port = free_port()
        with (tmp_path / "pyngress.log").open("w") as out:  # a file: nobody reads a pipe until the end
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyngress", "run", "-f", str(tmp_path), "--http-port", str(port),
                "--https-port", "0", "--address", "127.0.0.1", "--workers", "1", "--no-admin",
                "--shutdown-grace-period", str(GRACE_PERIOD), "--shutdown-grace", "30", stdout=out,
                stderr=asyncio.subprocess.STDOUT)
        try:
            sockets = [await _open(port) for _ in range(3)]
            for i, ws in enumerate(sockets):
                assert await ws.recv() == "hello from chat-0"
                await ws.send(f"ws {i}")
                assert await ws.recv() == f"ws {i}"
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            for ws in sockets:
                await asyncio.wait_for(ws.wait_closed(), 10)
            closed_after = time.monotonic() - sent
            codes = [ws.protocol.close_rcvd.code if ws.protocol.close_rcvd is not None else None for ws in sockets]
            assert codes == [1001] * 3  # every client got Going Away
            deadline = time.monotonic() + 5
            while pod.close_codes != [1001] * 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # polling the pod's record, bounded
            assert pod.close_codes == [1001] * 3  # and every pod connection a masked one (else 1002)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            exited_after = time.monotonic() - sent
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    output = (tmp_path / "pyngress.log").read_text()
    assert closed_after >= GRACE_PERIOD - 0.05, output  # not before the grace period: listeners still open
    assert exited_after < 5, output  # the handshakes ended the drain, not the 30 s --shutdown-grace
    print(f"SIGTERM: 3 WebSockets got close 1001 {closed_after:.2f}s after the signal "
          f"(shutdown-grace-period {GRACE_PERIOD}s), process exited 0 after {exited_after:.2f}s")


async def _open(port: int) -> ClientConnection:
    deadline = time.monotonic() + 15
    while True:
        try:
            return await connect(f"ws://127.0.0.1:{port}/chat")
        except (OSError, ConnectionClosed, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # the process is starting: poll, bounded
