"""How the probing worker tells the other workers of its group which endpoints fail their active check.

"One prober per endpoint per process group": with `--workers N`, worker 0 runs the active checks (N probers
would multiply the probe load by N and let workers disagree). Before forking, the parent makes one AF_UNIX
datagram socketpair per worker; worker i reads its end, worker 0 writes to the others'. A message is the
**whole** set of failing endpoint keys, newline-separated (an empty datagram: none), sent on every change and
again every tick (about once a second). Whole-state messages are idempotent, so a lost or reordered datagram
heals at the next tick, and a restarted worker learns the state within a second. Sends never block: a full
socket buffer drops the message (the next tick resends it).

If worker 0 dies, the others keep the last state they were told until the parent has restarted it and its
probes have had time to judge every endpoint: a prober holds its messages back for the longest
`interval x (unhealthy_threshold + 1) + timeout` of its checks after it starts, since it starts with every
endpoint healthy and would otherwise bring back, everywhere, endpoints the previous prober had taken out.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence

from pyngress.runtime.health import HealthManager

MAX_MESSAGE = 256 * 1024


class HealthLink:
    def __init__(self, inbox: socket.socket, peers: Sequence[socket.socket]) -> None:
        self.inbox = inbox
        self.peers = list(peers)  # the probing worker: the other workers' inboxes; others: empty
        self._last: bytes | None = None

    @classmethod
    def pairs(cls, workers: int) -> list[tuple[socket.socket, socket.socket]]:
        """Made by the parent before forking: (worker i's inbox, the end others write to)."""
        made = []
        for _ in range(workers):
            inbox, outlet = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            inbox.setblocking(False)
            outlet.setblocking(False)
            made.append((inbox, outlet))
        return made

    def publish(self, down: frozenset[str]) -> None:
        message = "\n".join(sorted(down)).encode()[:MAX_MESSAGE]
        for peer in self.peers:
            with contextlib.suppress(OSError):  # full buffer or a worker being restarted: next tick resends
                peer.send(message)

    def subscribe(self, loop: asyncio.AbstractEventLoop, health: HealthManager) -> None:
        loop.add_reader(self.inbox.fileno(), self._read, health)

    def _read(self, health: HealthManager) -> None:
        latest = None
        while True:
            try:
                latest = self.inbox.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                break
        if latest is not None and latest != self._last:
            self._last = latest
            health.set_active_down(k for k in latest.decode().split("\n") if k)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(Exception):
            loop.remove_reader(self.inbox.fileno())
