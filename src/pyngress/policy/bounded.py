"""A dict with a size bound and least-recently-used eviction: the per-client tables of the limits.

A flood of distinct client addresses must not grow memory without limit, so every per-client table is one of
these, with a configured maximum (`limit-table-size`, 65,536 by default: at ~200 bytes per entry, about
13 MB per table). Evicting an entry forgets that client's state: for a token bucket that means the client
starts again with a full bucket. nginx's limit_req zones make the same trade (LRU eviction when the zone is
full); the maximum should therefore be well above the number of clients active at once.

`get` marks an entry used (OrderedDict.move_to_end: constant time, in C); `put` evicts the oldest entries
beyond the maximum. Expiry by age is up to the caller: a token bucket idle long enough to be full again is
the same as no entry, so the limiter treats "absent" and "expired" alike and needs no sweeping.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruTable(Generic[K, V]):
    __slots__ = ("_entries", "evictions", "maximum")

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError("an LRU table holds at least one entry")
        self.maximum = maximum
        self.evictions = 0  # entries forgotten to stay within `maximum` (a metric: the table is too small)
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self.maximum:
            entries.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
