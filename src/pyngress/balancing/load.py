"""Load-aware balancing: least connections, power of two choices, peak EWMA.

All three read live per-endpoint state from the worker's `EndpointStatsRegistry` (`stats.py`; the runtime reports
every attempt's start and end there). Each balancer fetches its endpoints' `EndpointStats` in `update`, so a
pick reads attributes, never a dict. Weight 0 endpoints take no part; weights scale the load an endpoint may
carry: "load" below is `inflight / weight`.

* `LeastConn` (`least_conn`, nginx's `least_conn`): the endpoint with the lowest load; ties (the common case at
  low concurrency, when every count is 0) are broken by smooth weighted round robin among the tied endpoints,
  as nginx does, so equal weights rotate and unequal ones are honoured even when nothing is in flight. Order
  for ties: endpoints by key, rotated by an rng draw (a random start). O(n) per pick.
* `PowerOfTwo` (`p2c`; Envoy LEAST_REQUEST with choice_count 2, HAProxy `balance random(2)`): draw two distinct
  candidates at random in proportion to weight, take the one with the lower load, the first drawn on a tie.
  Drawing by weight is what keeps weights honoured when loads tie (idle traffic); the load comparison then
  spreads concurrency in proportion to weight. An endpoint with a strictly higher load than every other is never
  picked (its rival always wins). O(log n) per pick (Mitzenmacher, "The Power of Two Choices in Randomized Load
  Balancing", 2001: two choices cut the maximum load from log n / log log n to log log n).
* `PeakEwma` (`ewma`; ingress-nginx `balancer/ewma.lua`, after Finagle's PeakEwma): two candidates drawn as for
  p2c (ingress-nginx's PICK_SET_SIZE = 2), the lower `score = ewma(now) * (inflight + 1) / weight` wins, where
  ewma(now) is the peak-EWMA response time decayed to `ctx.now` (DECAY_TIME = 10 s, see `stats.py`). Ties
  (endpoints not yet measured score 0) fall back to the p2c rule on in-flight load, then to the first drawn.
  Endpoints that join a balancer unmeasured are seeded with the average EWMA of the measured ones (ingress-nginx's
  slow start), so they do not score 0 and take every request for which they are a candidate. O(log n) per pick,
  two `exp`. `ctx.now` must be the same clock as the `now` passed to `registry.finished`.

Retries: endpoints in `ctx.exclude` are left out and the choice is made among the rest (a slow path that builds
a list, O(n)); None when all are excluded. Determinism: same rng state, same endpoints, same stats, same picks.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from pyngress.balancing.base import PickContext
from pyngress.balancing.random_pick import WeightedDraw
from pyngress.balancing.stats import EndpointStats, EndpointStatsRegistry
from pyngress.balancing.weighted import arrange, carry_over, smooth_step
from pyngress.model import Endpoint


class LeastConn:
    """Lowest `inflight / weight`; ties by smooth weighted round robin among the tied. `pick` is O(n)."""

    __slots__ = ("_current", "_endpoints", "_entries", "_equal", "_registry", "_rotation", "_weights")

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random, stats: EndpointStatsRegistry) -> None:
        self._registry = stats
        self._rotation = rng.randrange(1 << 30)
        self._endpoints: list[Endpoint] = []
        self._current: list[int] = []
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        new = arrange(endpoints, self._rotation)
        self._current = carry_over(self._endpoints, self._current, new)  # the tie-break rotation goes on
        self._endpoints = new
        self._weights = [e.weight for e in new]
        self._entries = [self._registry.get(e.key) for e in new]
        self._equal = len(set(self._weights)) <= 1  # then compare counts, no division

    def pick(self, ctx: PickContext) -> Endpoint | None:
        if ctx.exclude:
            return self._pick_excluding(ctx.exclude)
        if self._equal:
            loads: list[float] = [e.inflight for e in self._entries]
        else:
            loads = [e.inflight / w for e, w in zip(self._entries, self._weights, strict=True)]
        if not loads:
            return None
        low = min(loads)
        if loads.count(low) == 1:
            return self._endpoints[loads.index(low)]
        tied = [i for i, load in enumerate(loads) if load == low]
        return self._endpoints[smooth_step(self._current, self._weights, tied)]

    def _pick_excluding(self, exclude: Collection[str]) -> Endpoint | None:
        allowed = [i for i, e in enumerate(self._endpoints) if e.key not in exclude]
        if not allowed:
            return None
        entries, weights = self._entries, self._weights
        low = min(entries[i].inflight / weights[i] for i in allowed)
        tied = [i for i in allowed if entries[i].inflight / weights[i] == low]
        return self._endpoints[smooth_step(self._current, weights, tied)]


class _TwoChoices:
    """Two distinct candidates drawn by weight; `_prefers(i, j, now)` says whether i beats j."""

    __slots__ = ("_draw", "_endpoints", "_entries", "_registry", "_rng", "_weights")

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random, stats: EndpointStatsRegistry) -> None:
        self._rng = rng
        self._registry = stats
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = arrange(endpoints)
        self._weights = [e.weight for e in self._endpoints]
        self._entries = [self._registry.get(e.key) for e in self._endpoints]
        self._draw = WeightedDraw(self._weights)

    def pick(self, ctx: PickContext) -> Endpoint | None:
        if ctx.exclude:
            return self._pick_excluding(ctx.exclude, ctx.now)
        endpoints = self._endpoints
        if len(endpoints) < 2:
            return endpoints[0] if endpoints else None
        i, j = self._draw.two(self._rng)
        return endpoints[i] if self._prefers(i, j, ctx.now) else endpoints[j]

    def _pick_excluding(self, exclude: Collection[str], now: float) -> Endpoint | None:
        allowed = [i for i, e in enumerate(self._endpoints) if e.key not in exclude]
        if len(allowed) < 2:
            return self._endpoints[allowed[0]] if allowed else None
        a, b = WeightedDraw([self._weights[i] for i in allowed]).two(self._rng)
        i, j = allowed[a], allowed[b]
        return self._endpoints[i] if self._prefers(i, j, now) else self._endpoints[j]

    def _prefers(self, i: int, j: int, now: float) -> bool:
        raise NotImplementedError


def _lighter_or_equal(a: EndpointStats, wa: int, b: EndpointStats, wb: int) -> bool:
    """a.inflight / wa <= b.inflight / wb, exactly (integers, no division)."""
    return a.inflight * wb <= b.inflight * wa


class PowerOfTwo(_TwoChoices):
    """Power of two choices on `inflight / weight`; the first drawn wins a tie. `pick` is O(log n)."""

    __slots__ = ()

    def _prefers(self, i: int, j: int, now: float) -> bool:
        return _lighter_or_equal(self._entries[i], self._weights[i], self._entries[j], self._weights[j])


class PeakEwma(_TwoChoices):
    """Two choices on `ewma(now) * (inflight + 1) / weight`; ties on load, then the first drawn."""

    __slots__ = ()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        super().update(endpoints)
        self._registry.seed([e.key for e in self._endpoints])

    def _prefers(self, i: int, j: int, now: float) -> bool:
        a, b = self._entries[i], self._entries[j]
        wa, wb = self._weights[i], self._weights[j]
        score_a = a.decayed(now) * (a.inflight + 1) * wb  # both sides times wa * wb: no division
        score_b = b.decayed(now) * (b.inflight + 1) * wa
        if score_a != score_b:
            return score_a < score_b
        return _lighter_or_equal(a, wa, b, wb)
