"""Token buckets in memory shared by the workers of one process group (`pyngress run --workers N`).

The parent maps an anonymous shared region before it forks (runtime.app); every worker then reads and writes
the same buckets, so a client gets the configured rate whichever workers its connections land on, instead of
each worker enforcing rate / N. The region is a fixed table of slots, one bucket per slot:

    slot = hash((limit, client)) mod slots;  slot = [tag: int64, tokens: float64, updated: float64]

Lookups are direct: no locks, no allocation, no chains. A slot holding another (limit, client) (its tag
differs) is taken over with a fresh, full bucket, so memory is fixed (24 bytes x slots, 6 MiB for the
default 262,144 slots) and a collision can only give a client a full bucket early, never refuse it wrongly:
with far fewer active clients than slots, collisions are rare. `hash()` agrees across the workers because
they are forked from one interpreter (same hash seed), and `now` is the monotonic clock, which all
processes share.

Races: two workers updating the same bucket at the same instant may both take the last token (each reads
before the other writes), so under contention a client can get a request or two more than its burst; a torn
read (fields from two writes) is caught by the range check and starts the bucket afresh. Pure: the buffer
and `now` are passed in.
"""

from __future__ import annotations

import mmap
import struct

SLOT = struct.Struct("=qdd")  # tag, tokens, updated: 24 bytes
DEFAULT_SLOTS = 1 << 18
Buffer = bytearray | mmap.mmap | memoryview  # a bytearray in tests, (part of) a MAP_SHARED mapping in workers


class SharedRateLimiter:
    """The interface of `policy.limits.RateLimiter`, over a shared buffer of slots."""

    __slots__ = ("_buffer", "_last", "_last_at", "_last_tag", "_salt", "_slots", "burst", "rate")

    def __init__(self, buffer: Buffer, salt: str, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self._buffer = buffer
        self._slots = len(buffer) // SLOT.size
        if self._slots < 1:
            raise ValueError("the shared buffer holds no slot")
        self._salt = salt  # the limit's identity: same in every worker (FlowSpec.key and the rate's index)
        self.rate = rate
        self.burst = burst
        self._last: str | None = None  # the client of the last `take`, and its tag and slot: no rehashing
        self._last_tag = self._last_at = 0

    def take(self, client: str, now: float) -> float:
        """0.0 when a token was taken (admit), else the seconds until the next token (refuse)."""
        if client == self._last:
            tag, at = self._last_tag, self._last_at
        else:
            tag = hash((self._salt, client))
            at = (tag % self._slots) * SLOT.size
            self._last, self._last_tag, self._last_at = client, tag, at
        buffer = self._buffer
        old, tokens, updated = SLOT.unpack_from(buffer, at)
        if old != tag or not 0.0 <= tokens <= self.burst:
            tokens, updated = self.burst, now  # a new client (or a slot taken over): a full bucket
        elif now > updated:
            tokens += (now - updated) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            updated = now
        if tokens >= 1.0:
            SLOT.pack_into(buffer, at, tag, tokens - 1.0, updated)
            return 0.0
        SLOT.pack_into(buffer, at, tag, tokens, updated)
        return float((1.0 - tokens) / self.rate)
