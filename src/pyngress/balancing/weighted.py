"""Smooth weighted round robin, as nginx's `ngx_http_upstream_get_peer` (ngx_http_upstream_round_robin.c) does it.

Each endpoint i has a weight w_i > 0 and an integer `current_i`. Per pick, every endpoint gains its weight
(`current_i += w_i`), the one with the largest `current` wins (the first in our order on a tie), and the winner
gives back the total (`current_best -= W`, W = sum of weights). From the all-zero state:

* every window of W picks starting at a multiple of W holds exactly w_i picks of i, and the state is back at
  zero (`current_i = W * (w_i - count_i)` stays within (-W, W)), so the sequence is periodic with period W and
  *any* W consecutive picks hold exactly w_i of each (3:1 over 400 picks: exactly 300/100);
* after any k picks, each endpoint's count is within 1 of its share k * w_i / W: the picks are interleaved as
  evenly as integers allow. For 3:1 that is A A B A | A A B A...: B exactly once in every 4 consecutive picks.
  (A run of three A's across the cycle boundary is unavoidable: three A's per B in a cycle of four.)

Only differences between the `current` values matter (adding a constant to all changes no argmax), which is
what `update` relies on.

Random start: the endpoints are ordered by key and the order rotated by an rng draw (ties go to the first in
that order), then the state is advanced by a random number of picks below min(W, 64). Replicas and workers thus
start at different endpoints and phases; the periodic properties above still hold, as the state is one the
sequence from zero reaches.

`update` keeps the state. With the same (key, weight) set, in any order, it changes nothing: the sequence goes on
exactly as if no reload happened. Otherwise endpoints that remain (by key) keep their standing (`current`, centred
on 0 and clamped into (-W, W) of the new total), new ones start at 0, weight-0 endpoints take no part. So an
endpoint that was due is still picked soon, and (checked over 60,000 random changes, with and without
exclusions before them, and by a property test) in the first W picks after the change each endpoint gets its
new weight give or take 1, and from the next cycle on every W consecutive picks are exact again. Without the
clamp, a standing earned under larger weights skewed up to four picks and took up to three cycles to settle.

Retries: endpoints in `ctx.exclude` sit the pick out (no gain), the winner gives back the total of those that
took part (as nginx skips tried peers), so the others' standing is unchanged; None when all are excluded.

Cost: O(n) per pick (two passes in C, `map` and `max`, and one `index`): 0.7 us for 10 endpoints, fine up to
~100 endpoints per backend; past that an EDF heap (O(log n), STYLE snippet 3) is the better trade. With equal
weights (every endpoint today: EndpointSlices carry no weight) smooth WRR from zero is plain rotation in our
order, so the state is kept as a cursor instead and a pick is O(1) (60 ns); `_standing` converts between the
two forms when an update changes the weights. Retries in that mode take the first endpoint not excluded from
the cursor on.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from operator import add

from pyngress.balancing.base import NO_CONTEXT, PickContext
from pyngress.model import Endpoint

MAX_START_STEPS = 64  # random phase of at most this many picks: spreads replicas, costs O(64 n) once


def arrange(endpoints: Iterable[Endpoint], rotation: int = 0) -> list[Endpoint]:
    """The endpoints that can be picked (weight > 0, first of each key) sorted by key, rotated by `rotation`.

    Sorting makes a balancer's behaviour independent of the order EndpointSlices list endpoints in."""
    by_key: dict[str, Endpoint] = {}
    for e in endpoints:
        if e.weight > 0:
            by_key.setdefault(e.key, e)
    ordered = [by_key[k] for k in sorted(by_key)]
    if ordered and rotation % len(ordered):
        r = rotation % len(ordered)
        ordered = ordered[r:] + ordered[:r]
    return ordered


def smooth_step(current: list[int], weights: Sequence[int], indices: Iterable[int]) -> int:
    """One smooth-WRR pick among `indices` only (in that order for ties); -1 when `indices` is empty."""
    best = -1
    total = 0
    for i in indices:
        current[i] += weights[i]
        total += weights[i]
        if best < 0 or current[i] > current[best]:
            best = i
    if best >= 0:
        current[best] -= total
    return best


def carry_over(old: Sequence[Endpoint], current: Sequence[int], new: Sequence[Endpoint]) -> list[int]:
    """`current` values for `new`: kept by key, centred on 0 and clamped into (-W, W) of the new total W (the
    range the sequence from zero stays in: a standing earned under larger weights would otherwise skew several
    cycles); new keys at 0."""
    standing = {e.key: c for e, c in zip(old, current, strict=True)}
    kept = [standing[e.key] for e in new if e.key in standing]
    centre = sum(kept) // len(kept) if kept else 0
    bound = sum(e.weight for e in new) - 1
    return [max(-bound, min(bound, standing[e.key] - centre)) if e.key in standing else 0 for e in new]


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin; see the module docstring. `pick` is O(n), O(1) for equal weights."""

    __slots__ = ("_current", "_cursor", "_endpoints", "_equal", "_rotation", "_total", "_weights")

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self._rotation = rng.randrange(1 << 30)
        self._endpoints: list[Endpoint] = []
        self._current: list[int] = []
        self._cursor = 0
        self._equal = True
        self._install(arrange(endpoints, self._rotation), [])
        for _ in range(rng.randrange(min(self._total, MAX_START_STEPS) or 1)):
            self.pick(NO_CONTEXT)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        new = arrange(endpoints, self._rotation)
        if [(e.key, e.weight) for e in new] == [(e.key, e.weight) for e in self._endpoints]:
            self._endpoints = new  # same set and weights (names may differ): the sequence goes on untouched
            return
        self._install(new, carry_over(self._endpoints, self._standing(), new))

    def pick(self, ctx: PickContext) -> Endpoint | None:
        if ctx.exclude:
            return self._pick_excluding(ctx.exclude)
        endpoints = self._endpoints
        if self._equal:
            # equal weights: smooth WRR from zero is plain rotation in our order, so a cursor does it in O(1)
            if not endpoints:
                return None
            i = self._cursor
            self._cursor = i + 1 if i + 1 < len(endpoints) else 0
            return endpoints[i]
        current = self._current
        current[:] = map(add, current, self._weights)
        best = current.index(max(current))
        current[best] -= self._total
        return endpoints[best]

    def _pick_excluding(self, exclude: Collection[str]) -> Endpoint | None:
        endpoints = self._endpoints
        if self._equal:  # the first not excluded from the cursor on; the cursor moves past it
            n = len(endpoints)
            for step in range(n):
                i = (self._cursor + step) % n
                if endpoints[i].key not in exclude:
                    self._cursor = (i + 1) % n
                    return endpoints[i]
            return None
        allowed = [i for i, e in enumerate(endpoints) if e.key not in exclude]
        best = smooth_step(self._current, self._weights, allowed)
        return endpoints[best] if best >= 0 else None

    def _standing(self) -> list[int]:
        """The smooth-WRR state, also in cursor mode: those picked in this round sit a round (-W) behind."""
        if not self._equal:
            return self._current
        return [-self._total if i < self._cursor else 0 for i in range(len(self._endpoints))]

    def _install(self, endpoints: list[Endpoint], current: list[int]) -> None:
        self._endpoints = endpoints
        self._weights = [e.weight for e in endpoints]
        self._total = sum(self._weights)
        self._equal = len(set(self._weights)) <= 1
        self._current = current or [0] * len(endpoints)
        # in cursor mode the next pick is the first endpoint of highest standing, as smooth WRR would pick
        self._cursor = self._current.index(max(self._current)) if self._equal and endpoints else 0
