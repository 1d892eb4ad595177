"""The local side of a global rate limit: fixed windows counted in Redis, handed out locally in batches.

Every replica and worker counts into one Redis key per (limit, client key, window): `INCRBY key batch`
reserves `batch` requests at once, and the worker then admits that many without asking Redis again. So a
request waits on Redis at most once per `batch` requests of its key, and the Redis load is 1/batch of the
request rate. Better still, when a batch is down to a quarter (`low_water`), `take` says PREFETCH: the
request is admitted and the runtime reserves the next batch in the background, so a steady stream of
requests does not wait on Redis at all.

Reading a reply: `total` is the count after our increment, so `total - asked` were counted before us and we
may admit `min(asked, limit - (total - asked))` (never below 0). When that is less than we asked, the window
is used up everywhere: the key is refused locally until the window ends, without asking again.

Error bound (documented): the limit is never exceeded (each admission was counted in Redis before it was
granted); a worker that stops seeing a key may leave reserved requests unused, at most low_water + batch
(the rest of one batch and a prefetched one), so with W workers and replicas holding reservations, at least
limit - W x (batch + low_water) requests are admitted per window when demand exceeds the limit. Fixed
windows allow up to 2 x limit across a window boundary (the end of one and the start of the next), the
usual price of fixed windows; they cost one counter per window.

Pure: `now` is wall-clock seconds passed in (all replicas must agree on the window boundaries).
"""

from __future__ import annotations

from typing import Final

from pyngress.policy.bounded import LruTable

ADMIT: Final = 0
REFUSE: Final = 1
ASK: Final = 2  # reserve a batch from Redis, record it (`granted`), then take again
PREFETCH: Final = 3  # admitted; and reserve the next batch now, in the background


def default_batch(limit: int) -> int:
    """Requests per Redis round trip when the Ingress does not say: 2 % of the limit, 1..100, so that the
    requests reserved but unused stay a small fraction of the limit."""
    return max(1, min(100, limit // 50))


class WindowBatches:
    __slots__ = ("_entries", "batch", "limit", "low_water", "window")

    def __init__(self, limit: int, window: float, batch: int = 0, maximum: int = 65536) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a global limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.batch = batch or default_batch(limit)
        self.low_water = self.batch // 4  # requests left in a batch when the next one is reserved
        # key -> [window number, requests left locally, used up in Redis (0/1)]
        self._entries: LruTable[bytes, list[int]] = LruTable(maximum)

    def window_of(self, now: float) -> int:
        return int(now // self.window)

    def take(self, key: bytes, now: float) -> int:
        entries = self._entries
        entry = entries.get(key)
        if entry is None or entry[0] != int(now // self.window):  # window_of(now), without the call
            return ASK
        entries.move_to_end(key)
        if entry[1] > 0:
            entry[1] -= 1
            return PREFETCH if entry[1] == self.low_water and not entry[2] else ADMIT
        return REFUSE if entry[2] else ASK

    def granted(self, key: bytes, window: int, total: int, asked: int) -> None:
        """Record Redis's reply to INCRBY <key of this window> <asked> (`total`: the count after it)."""
        grant = max(0, min(asked, self.limit - (total - asked)))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == window:
            entry[1] += grant
            entry[2] = int(grant < asked)
        else:
            self._entries.put(key, [window, grant, int(grant < asked)])

    def retry_after(self, now: float) -> float:
        """Seconds until the current window ends."""
        return (self.window_of(now) + 1) * self.window - now
