"""Active health probes: one asyncio task per endpoint under an active check, in the probing process only.

`Prober.set_targets` is called on every install with the endpoints whose backend asks for an active check.
Tasks and threshold states are keyed by `Endpoint.key`, so a reload neither restarts the probes of endpoints
that stay (no storm after a reload: each keeps its jittered schedule, see `health.active`) nor forgets their
state; a changed check (path, interval...) is read by the next probe. Endpoints that leave get their task
cancelled. Results go to `HealthManager.set_active` on each state change only.

A probe: connect (within `timeout`); for `tcp`, that is the pass. Otherwise `GET <path> HTTP/1.1` with
`Host: <address>`, `User-Agent: pyngress-health-check` and `Connection: close`, and the status line must arrive
within the same `timeout` with a status in the expected ranges. Only the status line is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from pyngress.health.active import CheckState, first_delay, next_delay
from pyngress.model import ActiveCheck, Endpoint
from pyngress.runtime.health import HealthManager


class Prober:
    def __init__(self, health: HealthManager, loop: asyncio.AbstractEventLoop, *,
                 rng: random.Random | None = None) -> None:
        self.health = health
        self.loop = loop
        self.rng = rng or random.Random()
        self.states: dict[str, CheckState] = {}
        self._checks: dict[str, tuple[Endpoint, ActiveCheck]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.closed = False

    def set_targets(self, targets: dict[str, tuple[Endpoint, ActiveCheck]]) -> None:
        if self.closed:
            return
        for key in [k for k in self._tasks if k not in targets]:
            self._tasks.pop(key).cancel()
            self.states.pop(key, None)
        self._checks = dict(targets)
        for key in targets:
            if key not in self._tasks:
                self._tasks[key] = self.loop.create_task(self._run(key))

    async def _run(self, key: str) -> None:
        await asyncio.sleep(first_delay(self._checks[key][1], self.rng))
        while key in self._checks:
            endpoint, check = self._checks[key]
            ok = await probe(endpoint, check)
            state = self.states.setdefault(key, CheckState())
            if state.observe(ok, check) and not self.closed:
                self.health.set_active(key, state.healthy)
            await asyncio.sleep(next_delay(check, self.rng))

    def close(self) -> None:
        self.closed = True
        for task in self._tasks.values():
            task.cancel()

    async def wait_closed(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def probes(self) -> int:
        return sum(s.probes for s in self.states.values())


async def probe(endpoint: Endpoint, check: ActiveCheck) -> bool:
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
            if check.tcp:
                return True
            host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
            writer.write(f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pyngress-health-check\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1"))
            line = await reader.readline()
        parts = line.split()
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and \
            check.passes(int(parts[1]))
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()  # nothing more to read or say: no FIN handshake to wait for
