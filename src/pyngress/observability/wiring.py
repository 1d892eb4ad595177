"""How `pyngress run` attaches observability to a worker and to the parent of several workers.

Kept out of runtime/app.py so that the app only makes one call, `observe_worker`, once a worker serves. The
parent of `--workers N` serves the admin listener over all workers from `runtime.workers.admin_in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyngress.observability.accesslog import AccessLog
from pyngress.observability.admin import AdminApp, AdminServer
from pyngress.observability.workers import LocalProvider, answer_parent

if TYPE_CHECKING:
    from pyngress.runtime.app import RunOptions
    from pyngress.runtime.server import ProxyServer

log = logging.getLogger("pyngress")


class Observer:
    """What one worker runs besides the proxy: the access log writer, and the admin listener or the pipe to
    the parent. `close()` after draining."""

    def __init__(self) -> None:
        self.admin: AdminServer | None = None
        self.access_log: AccessLog | None = None
        self.task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.admin is not None:
            await self.admin.close()
        if self.access_log is not None:
            await asyncio.to_thread(self.access_log.close)


def synced_of(source: Any) -> Callable[[], bool]:
    """Readiness of a configuration source: a Kubernetes source exposes `synced` (an asyncio.Event set once
    its caches are filled); a file source is ready once its first configuration is loaded (before we run)."""
    synced = getattr(source, "synced", None)
    if synced is None:
        return lambda: True
    return lambda: bool(synced.is_set())


async def observe_worker(server: ProxyServer, source: Any, options: RunOptions,
                         control: socket.socket | None) -> Observer:
    observer = Observer()
    if options.access_log:
        observer.access_log = AccessLog(fd=1)
        server.recorder.set_sink(observer.access_log)
    synced = synced_of(source)
    if control is not None:
        observer.task = asyncio.create_task(answer_parent(control, server, synced))
    elif options.admin_port is not None:
        observer.admin = await start_admin(server, options.admin_host, options.admin_port,
                                           options.compile.ingress_class, synced)
    return observer


async def start_admin(server: ProxyServer, host: str, port: int, ingress_class: str = "pyngress",
                      synced: Callable[[], bool] = lambda: True) -> AdminServer | None:
    admin = AdminServer(AdminApp(LocalProvider(server, synced), ingress_class))
    try:
        bound = await admin.start(host, port)
    except OSError as exc:
        log.error("cannot listen for admin on %s:%d: %s (serving traffic without it)", host, port,
                  exc.strerror or exc)
        return None
    log.info("admin listener on %s (dashboard /, metrics /metrics, status /status)", admin_url(host, bound))
    return admin


def admin_url(host: str, port: int) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
