"""Live per-endpoint load: in-flight requests and a peak-EWMA of response time, for the load-aware balancers.

One `EndpointStatsRegistry` per worker, keyed by `Endpoint.key`, shared by every balancer of that worker and kept
across reloads (STYLE 5: live state keyed by stable identity outlives snapshots). Two balancers over one
endpoint (two Ingresses balancing one Service differently) therefore see the same load, and a reload neither
forgets the latency of an endpoint nor its in-flight count.

Contract with the runtime (all calls on the worker's event loop thread; nothing here awaits or reads a clock):

* `started(key)` once per attempt, when the request is handed to an endpoint (after `pick`, before or as the
  upstream connection is used). A retry on another endpoint is a new attempt: `finished` for the first,
  `started` for the second.
* `finished(key, latency, now)` exactly once per `started`, when that attempt ends for any reason: response
  complete, upstream error, client gone, timeout. `latency` is the attempt's response time in seconds
  (request sent to response complete, or to the response head if the body streams; the runtime's choice, but
  the same for all endpoints), measured with the loop clock, not a coarse ticker. `now` is that clock at the
  end. Pass `latency=None` when the attempt failed or was abandoned: the in-flight count drops and no sample
  is taken. Why: a refused connection "answers" in microseconds, and feeding that to the EWMA would make a
  broken endpoint look the fastest (the fast-failure trap); ejecting broken endpoints is health checking's job.
* `retain(keys)` after each reload, with every endpoint key of the installed snapshot, after the balancers have
  been updated. Entries of other keys are dropped, unless requests are still in flight to them (then a later
  `retain` drops them), so an endpoint removed and re-added meanwhile keeps an exact count.

Balancers hold the `EndpointStats` objects of their endpoints (fetched with `get` in `update`), so the hot path
does no dict lookups. The registry never replaces an entry; it only drops entries of keys outside `retain`.

Peak EWMA (Finagle's PeakEwma, the model of ingress-nginx's `balancer/ewma.lua`): a sample above the current
value replaces it at once (the peak: react to a slowdown immediately); a lower sample is blended in with the
time-based weight `w = exp(-(now - ewma_at) / DECAY_TIME)`, `ewma = ewma * w + latency * (1 - w)`, so the value
forgets at the same rate whatever the request rate. When a balancer scores an endpoint it decays the value
towards 0 by the time since the last sample (`decayed(now)`, not stored), as ingress-nginx's `score()` does:
an endpoint nobody has used for a while looks fast again and is probed. Every update is O(1).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence

DECAY_TIME = 10.0  # seconds; ingress-nginx balancer/ewma.lua DECAY_TIME
NEVER = -math.inf  # ewma_at of an endpoint that has neither a sample nor a seed


class EndpointStats:
    """One endpoint's live load. `ewma` is in seconds, `ewma_at` the `now` of its last sample or seed."""

    __slots__ = ("ewma", "ewma_at", "inflight", "requests")

    def __init__(self) -> None:
        self.inflight = 0  # attempts started and not yet finished
        self.ewma = 0.0
        self.ewma_at = NEVER
        self.requests = 0  # attempts ever started (for metrics and tests)

    @property
    def measured(self) -> bool:
        """Has this endpoint a latency (a sample or a seed)?"""
        return self.ewma_at != NEVER

    def start(self) -> None:
        self.inflight += 1
        self.requests += 1

    def finish(self, latency: float | None, now: float) -> None:
        if self.inflight > 0:
            self.inflight -= 1
        if latency is None:
            return
        if latency > self.ewma:
            self.ewma = latency  # the peak: a slower sample wins at once
        else:
            w = math.exp(-(now - self.ewma_at) / DECAY_TIME) if now > self.ewma_at else 1.0
            self.ewma = self.ewma * w + latency * (1.0 - w)
        if now > self.ewma_at:
            self.ewma_at = now

    def decayed(self, now: float) -> float:
        """The EWMA as seen at `now`: decayed towards 0 by the time since the last sample (not stored)."""
        ewma = self.ewma
        if ewma and now > self.ewma_at:
            return ewma * math.exp((self.ewma_at - now) / DECAY_TIME)
        return ewma

    def __repr__(self) -> str:
        return f"EndpointStats(inflight={self.inflight}, ewma={self.ewma:.6f}, ewma_at={self.ewma_at})"


class EndpointStatsRegistry:
    """`Endpoint.key` -> `EndpointStats`, for one worker, across reloads. See the module docstring."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, EndpointStats] = {}

    def get(self, key: str) -> EndpointStats:
        """The entry of `key`, created (idle, unmeasured) on first use. Never replaced afterwards."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = EndpointStats()
        return entry

    def peek(self, key: str) -> EndpointStats | None:
        return self._entries.get(key)

    def started(self, key: str) -> None:
        self.get(key).start()

    def finished(self, key: str, latency: float | None, now: float) -> None:
        """End of an attempt; a key the registry no longer holds (removed endpoint) is ignored."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.finish(latency, now)

    def retain(self, keys: Collection[str]) -> None:
        """Drop the entries of keys not in `keys`, except those with requests still in flight."""
        gone = [k for k, e in self._entries.items() if e.inflight == 0 and k not in keys]
        for key in gone:
            del self._entries[key]

    def seed(self, keys: Sequence[str]) -> float | None:
        """Give the unmeasured endpoints among `keys` (one backend's) the average EWMA of the measured ones.

        ingress-nginx's slow start (`calculate_slow_start_ewma`): a new endpoint would otherwise score 0, look
        the fastest, and take every request it is a candidate for until its first response. The peers are
        decayed to the time of the latest sample among them, and the seed is stamped with that time. Returns
        the seed, or None when no peer is measured (the new endpoints then stay at 0, as in ingress-nginx).
        """
        entries = [self.get(k) for k in keys]
        measured = [e for e in entries if e.measured]
        if not measured or len(measured) == len(entries):
            return None
        at = max(e.ewma_at for e in measured)
        seed = sum(e.decayed(at) for e in measured) / len(measured)
        for entry in entries:
            if not entry.measured:
                entry.ewma, entry.ewma_at = seed, at
        return seed

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
