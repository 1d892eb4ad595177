"""Random balancing: each request independently picks endpoint i with probability w_i / W.

With equal weights this is kube-proxy's iptables mode (a uniform choice per connection, there made by
`-m statistic --mode random` rules; here per request). No state but the rng, so nothing to keep across reloads
and nothing shared between replicas that could line them up.

`WeightedDraw` is the sampler, shared with the two-choice balancers (`load.py`): a cumulative-weight table and
`bisect`, O(log n) per draw, one `rng.random()` per draw. `two` draws two *distinct* indices, the second from
the distribution with the first removed (so weight 1000:1 costs no rejection loop).

Retries: endpoints in `ctx.exclude` are removed and the draw is made over the rest (a fresh table, O(n): the
slow path, taken only by retries); None when all are excluded.

Determinism: the same rng state and the same endpoint set (in any order: endpoints are sorted by key) give the
same picks.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Collection, Sequence
from itertools import accumulate

from pyngress.balancing.base import PickContext
from pyngress.balancing.weighted import arrange
from pyngress.model import Endpoint


class WeightedDraw:
    """Random indices into a list of positive weights, in proportion to them."""

    __slots__ = ("_cumulative", "_last", "_total")

    def __init__(self, weights: Sequence[int]) -> None:
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1] if weights else 0
        self._last = len(weights) - 1

    def one(self, rng: random.Random) -> int:
        """One index; the table must not be empty."""
        # hi=_last: u * total can round up to total itself; that lands on the last index, not past it
        return bisect_right(self._cumulative, rng.random() * self._total, 0, self._last)

    def two(self, rng: random.Random) -> tuple[int, int]:
        """Two different indices, in draw order; the table needs at least two entries."""
        cumulative = self._cumulative
        i = bisect_right(cumulative, rng.random() * self._total, 0, self._last)
        weight = cumulative[i] - (cumulative[i - 1] if i else 0)
        x = rng.random() * (self._total - weight)
        if x >= cumulative[i] - weight:
            x += weight  # skip the first pick's interval: the rest keep their proportions
        j = bisect_right(cumulative, x, 0, self._last)
        if j == i:  # only when rounding put x on the upper edge; the probability is ~2**-53
            j = i - 1 if i else 1
        return i, j


class RandomPick:
    """Weighted random (uniform for equal weights). `pick` is O(log n)."""

    __slots__ = ("_draw", "_endpoints", "_rng")

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self._rng = rng
        self._endpoints: list[Endpoint] = []
        self._draw = WeightedDraw(())
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = arrange(endpoints)
        self._draw = WeightedDraw([e.weight for e in self._endpoints])

    def pick(self, ctx: PickContext) -> Endpoint | None:
        if ctx.exclude:
            return self._pick_excluding(ctx.exclude)
        endpoints = self._endpoints
        if not endpoints:
            return None
        return endpoints[self._draw.one(self._rng)]

    def _pick_excluding(self, exclude: Collection[str]) -> Endpoint | None:
        allowed = [e for e in self._endpoints if e.key not in exclude]
        if not allowed:
            return None
        return allowed[WeightedDraw([e.weight for e in allowed]).one(self._rng)]
