"""Per-client limits: token buckets (limit-rps / limit-rpm) and concurrent request counts (limit-connections).

Token bucket (what nginx's limit_req with `burst` and `nodelay` does): each client has a bucket of `burst`
tokens that refills at `rate` per second; a request takes one token or is refused. A new client starts with a
full bucket, so a tight loop gets exactly `burst` requests through (plus whatever refills while it runs)
before the first refusal, and is served again one token's time (1 / rate) later. The refusal says how long
to wait (`Retry-After`).

Buckets live in an `LruTable`: bounded, the least recently seen client forgotten first. A bucket idle for
burst / rate seconds is full again, so forgetting it changes nothing; only a table too small for the active
clients lets a forgotten client start over with a full bucket (counted in `evictions`).

Connections: nginx's limit_conn counts connections that have a request in progress in that location, not
idle keep-alive ones; we count the same thing, requests in progress per client, which for HTTP/1.1 is the
number of that client's connections busy on this route. The table only holds clients with a request in
progress, so it is bounded by the open connections.

`now` is passed in (the worker's coarse clock); nothing here reads a clock.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyngress.policy.bounded import LruTable


class ConnectionSlots(Protocol):
    """What a request holding a connection-limit slot keeps: `take` gave it `ticket` (None: refused), and it
    hands the ticket back once (`ConnectionLimiter` in one worker, `SharedConnectionLimiter` across them)."""

    def take(self, client: str, /) -> Any: ...
    def release(self, ticket: Any, /) -> None: ...


class RateLimiter:
    __slots__ = ("_buckets", "_last", "_last_bucket", "burst", "rate")

    def __init__(self, rate: float, burst: float, maximum: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate  # tokens per second
        self.burst = burst
        self._buckets: LruTable[str, list[float]] = LruTable(maximum)  # client -> [tokens, updated]
        # the client of the last `take` and its bucket: requests of one connection (or of one busy client)
        # come in a row, and then the bucket is already the LRU's newest: no lookup, no reordering
        self._last: str | None = None
        self._last_bucket: list[float] = []

    @property
    def table(self) -> LruTable[str, list[float]]:
        return self._buckets

    def take(self, client: str, now: float) -> float:
        """0.0 when a token was taken (admit), else the seconds until the next token (refuse)."""
        if client == self._last:
            bucket = self._last_bucket
        else:
            buckets = self._buckets
            found = buckets.get(client)
            if found is None:  # a new client: a full bucket (or one forgotten, which is the same)
                bucket = [self.burst, now]
                buckets.put(client, bucket)
            else:
                buckets.move_to_end(client)  # most recently used: evicted last
                bucket = found
            self._last, self._last_bucket = client, bucket
        tokens = bucket[0]
        if now > bucket[1]:
            tokens += (now - bucket[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


class ConnectionLimiter:
    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a connection limit is at least 1")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        count = self._counts.get(client, 0)
        if count >= self.limit:
            return False
        self._counts[client] = count + 1
        return True

    def take(self, client: str) -> str | None:
        """The ticket for `release` (the client itself), or None when it has `limit` requests in progress."""
        counts = self._counts
        count = counts.get(client, 0)
        if count >= self.limit:
            return None
        counts[client] = count + 1
        return client

    def release(self, client: str) -> None:
        count = self._counts.get(client, 0) - 1
        if count > 0:
            self._counts[client] = count
        else:
            self._counts.pop(client, None)

    def active(self, client: str) -> int:
        return self._counts.get(client, 0)

    def __len__(self) -> int:
        return len(self._counts)
