"""Balancer protocol (pick/update) and algorithms. Pure: rng and clock are injected."""

from pyngress.balancing.base import NO_CONTEXT, Balancer, PickContext
from pyngress.balancing.round_robin import RoundRobin

__all__ = ["NO_CONTEXT", "Balancer", "PickContext", "RoundRobin"]
