"""Round robin over a backend's endpoints, with a random start.

The random start (one draw per balancer, from the injected rng) keeps N workers and N replicas from all sending
their first request to the same pod. The cursor survives `update`: after a reload the rotation continues from
the endpoint it would have picked next, so a reload does not reset the spread (keyed by endpoint identity).
Weights are honoured by the smooth weighted algorithm in the balancing issue; this one treats all as equal.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from pyngress.balancing.base import PickContext
from pyngress.model import Endpoint


class RoundRobin:
    __slots__ = ("_cursor", "_endpoints")

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self._endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self._cursor = rng.randrange(len(self._endpoints)) if self._endpoints else 0

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        new = tuple(endpoints)
        if new == self._endpoints:
            return
        upcoming = self._endpoints[self._cursor % len(self._endpoints)].key if self._endpoints else None
        keys = [e.key for e in new]
        # continue with the endpoint that was due next, if it is still there; else keep the position
        self._cursor = keys.index(upcoming) if upcoming in keys else (self._cursor % len(new) if new else 0)
        self._endpoints = new

    def pick(self, ctx: PickContext) -> Endpoint | None:
        endpoints = self._endpoints
        n = len(endpoints)
        if not n:
            return None
        i = self._cursor
        if i >= n:
            i = 0
        self._cursor = i + 1
        chosen = endpoints[i]
        if ctx.exclude and chosen.key in ctx.exclude:
            return self._pick_excluding(ctx.exclude)
        return chosen

    def _pick_excluding(self, exclude: Collection[str]) -> Endpoint | None:
        # slow path, retries only: walk on from the cursor to the first endpoint not yet tried
        endpoints = self._endpoints
        for _ in range(len(endpoints)):
            i = self._cursor % len(endpoints)
            self._cursor = i + 1
            if endpoints[i].key not in exclude:
                return endpoints[i]
        return None
