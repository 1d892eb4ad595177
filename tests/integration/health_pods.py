"""Backends for the health tests: an EchoBackend whose failures a test switches on and off, and helpers."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from harness import EchoBackend, Received

from pyngress.model import ActiveCheck, Backend, HealthSpec, ProxySettings, RetryPolicy, Route

HEALTH_PATH = "/healthz"


class HealthPod(EchoBackend):
    """`status`: what every ordinary request gets (200: the echo). `health_status`: what /healthz gets.
    `hang_up`: read the request, then reset the connection without answering (the request was sent)."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.status = 200
        self.health_status = 200
        self.hang_up = False
        self.hang_up_after = 0.0  # seconds the pod takes before it hangs up (its own slowness)
        self.probes = 0

    @property
    def served(self) -> list[Received]:
        """Ordinary requests that reached this pod (health probes excluded)."""
        return [r for r in self.requests if r.path != HEALTH_PATH]

    async def _respond(self, req: Received, writer: asyncio.StreamWriter) -> bool:
        if req.path == HEALTH_PATH:
            self.probes += 1
            return await self._echo(req, writer, self.health_status)
        if self.hang_up:
            if self.hang_up_after:
                await asyncio.sleep(self.hang_up_after)
            writer.transport.abort()
            return False
        if self.status != 200:
            return await self._echo(req, writer, self.status)
        return await super()._respond(req, writer)


def checked(backend: Backend, *, interval: float = 0.1, unhealthy: int = 2, healthy: int = 2,
            slow_start: float = 0.0) -> Backend:
    check = ActiveCheck(path=HEALTH_PATH, interval=interval, timeout=1.0, healthy_threshold=healthy,
                        unhealthy_threshold=unhealthy)
    return replace(backend, health=HealthSpec(active=check, slow_start=slow_start))


def with_retry(route: Route, **policy: Any) -> Route:
    return replace(route, retry=RetryPolicy(**policy))


NO_EJECTION = ProxySettings(outlier_consecutive_failures=0)
