"""Redis for the global rate limits (`--redis-url`): one INCRBY + EXPIRE round trip per reserved batch.

Keys: `pyngress:grl:<namespace/ingress>:<limit>/<window>:<window number>:<client key>`, expiring one window
after their window ends (set atomically with the first count, by a small Lua script: one command per
reservation); every replica computes the same key (wall-clock windows, the Ingress's name, the
key template's value), so they all count into it. See `policy.global_window` for the batching.

When Redis cannot be reached (or answers with an error, or takes longer than `timeout`): the limit fails open
(the request is admitted) as ingress-nginx's global limit did, or, with the ConfigMap's
`global-rate-limit-fail-closed: "true"`, closed (503). Either way `failures` counts it (the observability
exporter reads that attribute), a warning is logged at most every 10 seconds, and Redis is not asked again
for `backoff` seconds, so an outage costs no request a timeout after the first.

Concurrent requests of one key while a reservation is in flight wait for that reservation instead of each
sending their own (`_inflight`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pyngress.policy.global_window import Key, WindowBatches

log = logging.getLogger("pyngress.flow")

RESERVE = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return total
"""


class GlobalLimiter:
    def __init__(self, url: str, *, timeout: float = 0.5, backoff: float = 1.0) -> None:
        import redis.asyncio as aioredis  # imported only when a Redis URL is given

        self.url = url
        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        # one command per reservation (EVALSHA, loaded on first use): count, and start the expiry with the key
        self._reserve_script = self._redis.register_script(RESERVE)
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError, asyncio.TimeoutError)
        self.timeout = timeout
        self.backoff = backoff
        self.failures = 0  # reservations that failed (Redis down or erroring): a counter for the metrics
        self.round_trips = 0  # reservations sent
        self.down_until = 0.0  # loop time: until then Redis is not asked
        self._warned_at = -1e9
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}

    async def reserve(self, batches: WindowBatches, redis_key: bytes, key: Key, window: int,
                      now_loop: float) -> bool:
        """Reserve a batch for `key` in `window`; False when Redis failed (the caller fails open or closed)."""
        pending = self._inflight.get(redis_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[redis_key] = future
        ok = False
        try:
            ok = await self._reserve(batches, redis_key, key, window, now_loop)
        finally:
            del self._inflight[redis_key]
            future.set_result(ok)  # also when cancelled: the waiters then decide as for a failure
        return ok

    async def _reserve(self, batches: WindowBatches, redis_key: bytes, key: Key, window: int,
                       now_loop: float) -> bool:
        if now_loop < self.down_until:
            self.failures += 1
            return False
        self.round_trips += 1
        asked = batches.batch_for(key)  # grows for busy keys (policy.global_window)
        try:
            total = await self._reserve_script(keys=[redis_key], args=[asked, max(1, int(batches.window * 2 + 1))])
        except self._errors as exc:
            self._failed(exc, now_loop)
            return False
        batches.granted(key, window, int(total), asked, now_loop)
        return True

    def _failed(self, exc: BaseException, now_loop: float) -> None:
        self.failures += 1
        self.down_until = now_loop + self.backoff
        if now_loop - self._warned_at >= 10.0:
            self._warned_at = now_loop
            log.warning("global rate limit: Redis at %s failed (%s); failing open or closed as configured "
                        "(%d failures so far)", self.url, exc or type(exc).__name__, self.failures)

    async def close(self) -> None:
        await self._redis.aclose()
