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

Busy keys get bigger batches (only when the Ingress did not set `global-rate-limit-batch`): a key whose
previous batch was used up in under GROW_SECONDS asks for twice as many next time, up to 2 % of the limit,
and one idle for more than SHRINK_SECONDS between batches asks for half, down to the default. So a key at
40,000 requests per second costs a few Redis round trips per second instead of 400, and the prefetch (a
quarter of a batch ahead) has tens of milliseconds to come back before the batch runs out.

Error bound (documented): the limit is never exceeded (each admission was counted in Redis before it was
granted); a worker that stops seeing a key may leave reserved requests unused, at most low_water + batch
(the rest of one batch and a prefetched one), so with W workers and replicas holding reservations, at least
limit - W x 1.25 x max_batch requests are admitted per window when demand exceeds the limit (max_batch: the
configured batch, else 2 % of the limit). Fixed
windows allow up to 2 x limit across a window boundary (the end of one and the start of the next), the
usual price of fixed windows; they cost one counter per window.

Pure: `now` is wall-clock seconds passed in (all replicas must agree on the window boundaries).
"""

from __future__ import annotations

from typing import Final, TypeAlias

from pyngress.policy.bounded import LruTable

ADMIT: Final = 0
REFUSE: Final = 1
ASK: Final = 2  # reserve a batch from Redis, record it (`granted`), then take again
PREFETCH: Final = 3  # admitted; and reserve the next batch now, in the background
GROW_SECONDS = 0.2  # a batch used up faster than this: the key's next one is twice as big
SHRINK_SECONDS = 2.0  # slower than this: half as big
Key: TypeAlias = "bytes | str"  # the client address as it is ($remote_addr), or a key template's bytes


def default_batch(limit: int) -> int:
    """Requests per Redis round trip when the Ingress does not say: 2 % of the limit, 1..100, so that the
    requests reserved but unused stay a small fraction of the limit."""
    return max(1, min(100, limit // 50))


class WindowBatches:
    __slots__ = ("_entries", "_last", "_last_entry", "batch", "limit", "low_water", "max_batch", "window")

    def __init__(self, limit: int, window: float, batch: int = 0, maximum: int = 65536) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a global limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.batch = batch or default_batch(limit)  # the first batch of a key
        self.max_batch = batch or max(self.batch, limit // 50)  # a configured batch stays fixed
        self.low_water = self.batch // 4  # requests left in a batch when the next one is reserved
        # key -> [window number, requests left locally, used up in Redis (0/1), the key's batch, its low water,
        #         when its last batch was granted (the caller's clock)]
        self._entries: LruTable[Key, list[float]] = LruTable(maximum)
        # the key of the last `take` and its entry: a connection's requests repeat the key, and then the entry
        # is the LRU's newest already (anything that inserts resets this)
        self._last: Key | None = None
        self._last_entry: list[float] = []

    def window_of(self, now: float) -> int:
        return int(now // self.window)

    def take(self, key: Key, now: float) -> int:
        if key == self._last:
            entry = self._last_entry
        else:
            entries = self._entries
            found = entries.get(key)
            if found is None:
                return ASK
            entries.move_to_end(key)
            entry = self._last_entry = found
            self._last = key
        if entry[0] != int(now // self.window):  # window_of(now), without the call
            return ASK
        if entry[1] > 0:
            entry[1] -= 1
            return PREFETCH if entry[1] == entry[4] and not entry[2] else ADMIT
        return REFUSE if entry[2] else ASK

    def batch_for(self, key: Key) -> int:
        """How many requests to reserve for `key` now."""
        entry = self._entries.get(key)
        return self.batch if entry is None else int(entry[3])

    def granted(self, key: Key, window: int, total: int, asked: int, now: float = 0.0) -> None:
        """Record Redis's reply to INCRBY <key of this window> <asked> (`total`: the count after it). `now`: a
        monotonic clock, to size the key's next batch by how fast this one was used."""
        grant = max(0, min(asked, self.limit - (total - asked)))
        entry = self._entries.get(key)
        batch = asked
        if entry is not None:
            since = now - entry[5]
            if since < GROW_SECONDS:
                batch = min(asked * 2, self.max_batch)
            elif since > SHRINK_SECONDS:
                batch = max(asked // 2, self.batch)
        if entry is not None and entry[0] == window:
            entry[1] += grant
            entry[2] = int(grant < asked)
            entry[3], entry[4], entry[5] = batch, batch // 4, now
        else:
            self._entries.put(key, [window, grant, int(grant < asked), batch, batch // 4, now])
            self._last = None  # an insert: the cached entry may be stale, or no longer the LRU's newest

    def retry_after(self, now: float) -> float:
        """Seconds until the current window ends."""
        return (self.window_of(now) + 1) * self.window - now
