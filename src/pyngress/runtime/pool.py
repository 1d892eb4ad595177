"""Keep-alive connections to endpoints, per worker.

Idle connections are kept per endpoint key in a LIFO stack (the most recently used one is the least likely to
have been closed by the upstream's own keep-alive timer). The pool is bounded as ingress-nginx's upstream
keepalive is: `upstream-keepalive-connections` idle connections in all, each closed after
`upstream-keepalive-timeout` idle seconds or `upstream-keepalive-requests` requests. Connecting is the only
step that needs a task; a pooled connection is handed over synchronously.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, cast

from pyngress.model import ProxySettings
from pyngress.runtime.downstream import as_protocol
from pyngress.runtime.health import HealthManager
from pyngress.runtime.retrying import ERROR, TIMEOUT
from pyngress.runtime.tls_contexts import upstream_context, upstream_server_hostname
from pyngress.runtime.upstream import Upstream

if TYPE_CHECKING:
    from pyngress.model import Endpoint, UpstreamTLS
    from pyngress.runtime.exchange import Exchange


class Clock:
    """The loop's time, refreshed by the server's ticker: a cheap, coarse activity stamp. An object of its own
    (compiled: a native attribute) that the connections keep a reference to, read on every request."""

    def __init__(self, now: float) -> None:
        self.now = now


class UpstreamPool:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.clock = clock
        self.settings: ProxySettings | None = None
        self._idle: dict[str, list[Upstream]] = {}
        self._idle_count = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # issue 7: every open connection by endpoint (draining), and the worker's health state
        self._open: dict[str, set[Upstream]] = {}
        self.health = HealthManager(loop.time(), ProxySettings())  # ProxyServer installs its own

    def acquire(self, endpoint: Endpoint, ex: Exchange, settings: ProxySettings) -> None:
        self.settings = settings
        tls = ex.upstream_tls
        key = endpoint.key if tls is None else endpoint.key + tls.pool_suffix  # TLS connections apart
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if conn.transport is not None and not conn.broken:
                conn.attach(ex)
                return
        task = self.loop.create_task(self._connect(endpoint, ex, settings.proxy_connect_timeout, key, tls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, endpoint: Endpoint, ex: Exchange, timeout: float, key: str,
                       tls: UpstreamTLS | None) -> None:
        try:
            if tls is None:
                opening = self.loop.create_connection(lambda: as_protocol(Upstream(self, endpoint)),
                                                      endpoint.address, endpoint.port)
            else:  # backend-protocol: HTTPS; an SSLError (bad certificate...) is an OSError: 502 as a refusal
                opening = self.loop.create_connection(
                    lambda: as_protocol(Upstream(self, endpoint, key)), endpoint.address, endpoint.port,
                    ssl=upstream_context(tls), server_hostname=upstream_server_hostname(tls))
            _, protocol = await asyncio.wait_for(opening, timeout)
            conn = cast(Upstream, protocol)
        except (OSError, TimeoutError) as exc:
            self.health.connect_failed(endpoint.key)
            if not ex.client.gone:
                timed_out = isinstance(exc, TimeoutError)
                ex.client.retry(ex, 504 if timed_out else 502, TIMEOUT if timed_out else ERROR, sent=False)
            return
        if conn.transport is None:  # it died before we got to use it (it spoke first: not HTTP/1.1, issue 4)
            self.health.connect_failed(endpoint.key)
            if not ex.client.gone:
                ex.client.retry(ex, 502, ERROR, sent=False)
            return
        self._open.setdefault(endpoint.key, set()).add(conn)  # issue 7: draining (forget() removes it)
        if ex.client.gone or ex.upstream is not None:
            self.release(conn)  # nobody waits for it any more: keep it for the next request
            return
        conn.attach(ex)

    def release(self, conn: Upstream) -> None:
        settings = self.settings
        if (settings is None or conn.transport is None
                or self._idle_count >= settings.upstream_keepalive_connections
                or conn.requests >= settings.upstream_keepalive_requests):
            conn.close()
            return
        conn.idle_since = self.clock.now
        stack = self._idle.get(conn.key)
        if stack is None:
            stack = self._idle[conn.key] = []
        stack.append(conn)
        self._idle_count += 1

    def forget(self, conn: Upstream) -> None:
        """A connection closed: drop it from the idle stacks if it is there."""
        endpoint_key = conn.endpoint.key  # `_open` is by endpoint; TLS pool keys carry a suffix
        conns = self._open.get(endpoint_key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._open[endpoint_key]
        stack = self._idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)
            self._idle_count -= 1

    def expire(self, now: float) -> None:
        """Close idle connections past the keep-alive timeout (called by the server's ticker)."""
        if self.settings is None:
            return
        limit = now - self.settings.upstream_keepalive_timeout
        for stack in self._idle.values():
            for conn in [c for c in stack if c.idle_since < limit]:
                conn.close()  # connection_lost calls forget()

    def retain(self, keys: Collection[str]) -> None:
        """After a reload: close idle connections to endpoints that are gone. Busy ones finish their exchange
        first and then close instead of returning to the pool (marked broken)."""
        for key, stack in list(self._idle.items()):
            if key.partition("#")[0] not in keys:  # TLS connections' keys carry a suffix
                for conn in list(stack):
                    conn.close()
        for key, conns in self._open.items():
            if key not in keys:
                for conn in conns:
                    conn.broken = True

    def abort_endpoint(self, key: str) -> int:
        """Abort every connection to `key` (its drain deadline passed); the number aborted."""
        conns = list(self._open.get(key, ()))
        for conn in conns:
            if conn.transport is not None:
                conn.transport.abort()
        return len(conns)

    def open_count(self, key: str) -> int:
        return len(self._open.get(key, ()))

    def close_idle(self) -> None:
        for stack in list(self._idle.values()):
            for conn in list(stack):
                conn.close()

