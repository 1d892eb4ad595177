"""Connection counts in memory shared by the workers of one process group (`pyngress run --workers N`).

`limit-connections: "N"` must allow N requests in progress per client whichever workers its connections
land on, as nginx's limit_conn zone does for all its workers. The parent maps an anonymous shared region
before it forks (runtime.app) and every worker counts there:

    row s = [worker 0: (tag, count)] [worker 1: (tag, count)] ... [worker W-1: (tag, count)]   (int64s)

A (limit, client) pair hashes to a row `h`; its count is the sum of the `count`s whose `tag` is its tag, over
the W entries of the PROBE rows h .. h+PROBE-1 (one window, read with one unpack). Each worker writes only its
own entries (its column): it puts a client in the first row of the window where its entry already holds that
tag, else where its entry is free (count 0). So:

* no two processes ever write the same word: no lock, and no lost update;
* a worker that dies holding slots leaves counts behind only in its own column, and the worker the parent
  forks in its place zeroes that column before it serves (`clear_column`): nothing leaks past a restart;
* two clients hashing to the same row only collide if they land on the same worker, and then the second
  simply takes the next row of the window. With the window full (PROBE clients of this worker in progress
  that all hash near this one) the request is admitted uncounted (`UNCOUNTED`, counted in `overflows`): a
  collision can never refuse a client wrongly. With 65,536 rows that needs thousands of clients in progress
  at once on one worker before it happens at all.

Races: two workers admitting the same client at the same instant each read the sum before the other's
increment lands. So a worker that admits within W of the limit reads the window again after counting and
backs off (uncounts, refuses) if the total went over; when two workers race for the last slot both may back
off (a client refused with a slot free, at that instant only). Far from the limit it does not look again:
the others could only push the total over if they admitted W or more requests of this client between its
read and its write, which takes the OS descheduling it in that fraction of a microsecond; then the limit is
exceeded by at most W - 1 (one per preempted worker) until those requests end. No lock: this relies on a
write being visible to the other processes by the time they read again (hundreds of interpreted
instructions later; x86 and arm64 drain their store buffers long before that). The entry's position
(`take`'s ticket) is kept by the request, so release needs no lookup. `hash()` agrees across the workers
because they are forked from one interpreter (same hash seed). Pure: the buffer is passed in.
"""

from __future__ import annotations

import struct
from itertools import compress

from pyngress.policy.shared_buckets import Buffer

ENTRY = struct.Struct("=qq")  # tag, count: 16 bytes
DEFAULT_ROWS = 1 << 16
PROBE = 4  # rows searched per client: the window read at once
UNCOUNTED = -1  # a ticket: admitted, but this worker's entries of the window were all taken


def region_size(workers: int, rows: int = DEFAULT_ROWS) -> int:
    """Bytes for `rows` rows of `workers` entries (the window of the last row does not wrap: PROBE-1 more)."""
    return (rows + PROBE - 1) * workers * ENTRY.size


def clear_column(buffer: Buffer, workers: int, worker: int) -> None:
    """Forget every count of `worker`: the worker that takes a dead one's place calls it before serving."""
    words = memoryview(buffer).cast("q")
    try:
        column = words[2 * worker::2 * workers]  # tags and counts interleave: the tag of each row's entry
        zeros = memoryview(bytearray(len(column) * 8)).cast("q")
        column[:] = zeros
        words[2 * worker + 1::2 * workers] = zeros
    finally:
        words.release()


class SharedConnectionLimiter:
    """`policy.limits.ConnectionLimiter` over a shared region: `take(client)` -> ticket, `release(ticket)`."""

    __slots__ = (
        "_last",
        "_last_at",
        "_last_tag",
        "_own",
        "_row_words",
        "_rows",
        "_salt",
        "_window",
        "_words",
        "_workers",
        "limit",
        "overflows",
    )

    def __init__(self, buffer: Buffer, salt: str, limit: int, workers: int, worker: int) -> None:
        if limit < 1:
            raise ValueError("a connection limit is at least 1")
        if not 0 <= worker < workers:
            raise ValueError("the worker index is outside the group")
        self._workers = workers
        self._row_words = 2 * workers
        self._rows = len(buffer) // (self._row_words * 8) - (PROBE - 1)
        if self._rows < 1:
            raise ValueError("the shared buffer holds no row")
        self._words = memoryview(buffer).cast("B").cast("q")  # one int64 per index: single reads and writes
        self._salt = salt  # the limit's identity: same in every worker (FlowSpec.key)
        self._window = struct.Struct(f"={2 * workers * PROBE}q")
        self._own = tuple(2 * (p * workers + worker) for p in range(PROBE))  # our tags' indexes in a window
        self.limit = limit
        self.overflows = 0  # admitted uncounted: the window was full (a metric; the table is too small)
        self._last: str | None = None  # the client of the last `take`, and its tag and row: no rehashing
        self._last_tag = self._last_at = 0

    def take(self, client: str) -> int | None:
        """A ticket (the index of the count taken, or UNCOUNTED) to give back to `release` once the request
        ends; None (refused) when the client already has `limit` requests in progress over all workers."""
        if client == self._last:
            tag, at = self._last_tag, self._last_at
        else:
            tag = hash((self._salt, client))
            at = (tag % self._rows) * self._row_words
            self._last, self._last_tag, self._last_at = client, tag, at
        words = self._window.unpack_from(self._words, at * 8)
        tags = words[0::2]
        found = tags.count(tag)
        total = 0
        if found:  # usually one entry: the worker's own, or another's
            total = words[2 * tags.index(tag) + 1] if found == 1 else self._sum(words, tag)
            if total >= self.limit:
                return None
        ticket = self._count(words, tag, at)
        # near the limit another worker may have counted this client since we read: look again, and back off
        # if we went over together (then both may back off: over never, under rarely)
        if total + self._workers > self.limit and ticket >= 0 \
                and self._sum(self._window.unpack_from(self._words, at * 8), tag) > self.limit:
            self._words[ticket] -= 1
            return None
        return ticket

    def _count(self, words: tuple[int, ...], tag: int, at: int) -> int:
        """Count one more request of `tag` in this worker's entry of the window (`words`, read at row `at`)."""
        free = -1
        for index in self._own:
            count = words[index + 1]
            if count > 0:
                if words[index] == tag:
                    self._words[at + index + 1] = count + 1
                    return at + index + 1
            elif free < 0:
                free = index
        if free < 0:
            self.overflows += 1
            return UNCOUNTED
        shared = self._words
        shared[at + free] = tag
        shared[at + free + 1] = 1
        return at + free + 1

    @staticmethod
    def _sum(words: tuple[int, ...], tag: int) -> int:
        return sum(compress(words[1::2], map(tag.__eq__, words[0::2])))

    def release(self, ticket: int) -> None:
        if ticket >= 0:
            shared = self._words
            count = shared[ticket]
            if count > 0:
                shared[ticket] = count - 1

    def active(self, client: str) -> int:
        """Requests of `client` in progress over all workers (tests, the admin view)."""
        tag = hash((self._salt, client))
        return self._sum(self._window.unpack_from(self._words, (tag % self._rows) * self._row_words * 8), tag)
