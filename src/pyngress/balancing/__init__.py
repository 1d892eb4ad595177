"""Balancer protocol (pick/update) and algorithms. Pure: rng and clock are injected."""

from pyngress.balancing.base import NO_CONTEXT, Balancer, PickContext
from pyngress.balancing.hash_key import HashKey, RequestView, compile_hash_key
from pyngress.balancing.hashing import HashSubset, Maglev, RingHash, hash64
from pyngress.balancing.load import LeastConn, PeakEwma, PowerOfTwo
from pyngress.balancing.random_pick import RandomPick
from pyngress.balancing.stats import EndpointStats, EndpointStatsRegistry
from pyngress.balancing.weighted import SmoothWeightedRoundRobin

__all__ = [
    "NO_CONTEXT",
    "Balancer",
    "EndpointStats",
    "EndpointStatsRegistry",
    "HashKey",
    "HashSubset",
    "LeastConn",
    "Maglev",
    "PeakEwma",
    "PickContext",
    "PowerOfTwo",
    "RandomPick",
    "RequestView",
    "RingHash",
    "SmoothWeightedRoundRobin",
    "compile_hash_key",
    "hash64",
]
