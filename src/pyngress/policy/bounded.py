"""A dict with a size bound and least-recently-used eviction: the per-client tables of the limits.

A flood of distinct client addresses must not grow memory without limit, so every per-client table is one of
these, with a configured maximum (`limit-table-size`, 65,536 by default: at ~200 bytes per entry, about
13 MB per table). Evicting an entry forgets that client's state: for a token bucket that means the client
starts again with a full bucket. nginx's limit_req zones make the same trade (LRU eviction when the zone is
full); the maximum should therefore be well above the number of clients active at once.

It is an OrderedDict, so the hot path calls C methods only: `get` to look up, `move_to_end` to mark an entry
used (constant time), `put` to insert and evict the oldest entries beyond the maximum. Expiry by age is up to
the caller: a token bucket idle long enough to be full again is the same as no entry, so the limiter treats
"absent" and "expired" alike and needs no sweeping.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruTable(OrderedDict[K, V]):
    def __init__(self, maximum: int) -> None:
        super().__init__()
        if maximum < 1:
            raise ValueError("an LRU table holds at least one entry")
        self.maximum = maximum
        self.evictions = 0  # entries forgotten to stay within `maximum` (a metric: the table is too small)

    def used(self, key: K) -> V | None:
        """The entry, marked as the most recently used; None when absent."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maximum:
            self.popitem(last=False)
            self.evictions += 1
