"""From a route's BalanceSpec to the Balancer that serves it.

One place knows which class implements which `load-balance` value, which of them read live load (and so need
the runtime to report request starts and ends through the stats registry), and which need a per-request
context (a hash key, the clock). The runtime keeps the balancer made here across reloads for as long as the
route's `balancer_key` (backend + spec) stays the same, and only calls `update` with the new endpoints.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pyngress.balancing.affinity import ClientIPAffinity, CookieAffinity
from pyngress.balancing.base import Balancer
from pyngress.balancing.hashing import HashSubset, Maglev, RingHash
from pyngress.balancing.load import LeastConn, PeakEwma, PowerOfTwo
from pyngress.balancing.random_pick import RandomPick
from pyngress.balancing.stats import EndpointStatsRegistry
from pyngress.balancing.weighted import SmoothWeightedRoundRobin
from pyngress.model import AffinitySpec, BalanceSpec, Endpoint

LOAD_AWARE = frozenset({"least_conn", "p2c", "ewma"})


def make_balancer(spec: BalanceSpec, affinity: AffinitySpec, endpoints: Sequence[Endpoint],
                  rng: random.Random, stats: EndpointStatsRegistry) -> Balancer:
    inner = _algorithm(spec, endpoints, rng, stats)
    if affinity.kind == "cookie":
        return CookieAffinity(inner, endpoints, salt=affinity.salt.encode(), mode=affinity.mode, rng=rng)
    if affinity.kind == "client-ip":
        return ClientIPAffinity(inner, endpoints, timeout=affinity.timeout, table_size=affinity.table_size)
    return inner


def _algorithm(spec: BalanceSpec, endpoints: Sequence[Endpoint], rng: random.Random,
               stats: EndpointStatsRegistry) -> Balancer:
    if spec.hash_by:
        if spec.subset_size:
            return HashSubset(endpoints, rng, spec.subset_size, spec.hash_algorithm)
        return Maglev(endpoints, rng) if spec.hash_algorithm == "maglev" else RingHash(endpoints, rng)
    algorithm = spec.algorithm
    if algorithm == "random":
        return RandomPick(endpoints, rng)
    if algorithm == "least_conn":
        return LeastConn(endpoints, rng, stats)
    if algorithm == "p2c":
        return PowerOfTwo(endpoints, rng, stats)
    if algorithm == "ewma":
        return PeakEwma(endpoints, rng, stats)
    return SmoothWeightedRoundRobin(endpoints, rng)


def uses_stats(spec: BalanceSpec) -> bool:
    """Does the balancer read in-flight counts and latencies (so the runtime must report them)?"""
    return not spec.hash_by and spec.algorithm in LOAD_AWARE


def needs_context(spec: BalanceSpec, affinity: AffinitySpec) -> bool:
    """Does `pick` read the request (hash key, cookie, address), beyond what a retry needs? (The clock comes
    for free: the runtime's shared context carries a `now` its ticker refreshes.)"""
    return bool(spec.hash_by) or bool(affinity.kind)
