"""A route's `FlowSpec` made ready for the hot path: networks as int ranges, matchers compiled, and this
worker's live tables (token buckets, connection counts).

Order of the checks (`runtime.flow` runs them): access (deny, allow, blocked agents and referers: 403),
then, unless the client is in limit-whitelist, each rate limit, then the connection limit, then the global
limit. A refused request takes no token from the buckets it did not reach.

Workers (`pyngress run --workers N`): the kernel spreads connections over the worker processes
(SO_REUSEPORT). Rate limits then use token buckets in memory the workers share (`shared`, see
policy.shared_buckets): the configured rate whichever worker a request lands on. Connection counts likewise
live in a shared region (`counts`: the region, the worker count and this worker's index; see
policy.shared_connections): the configured count over all workers, exceeded by at most N - 1 when workers
admit the same client at the same instant. Without shared regions (a ProxyServer used on its own) the
limits are divided: rate / N, ceil(burst / N), ceil(connections / N). The Redis global limit is exact
across workers and replicas.
"""

from __future__ import annotations

from math import ceil

from pyngress.balancing.hash_key import HashKey
from pyngress.model.flow import FlowSpec
from pyngress.policy.access import AccessList
from pyngress.policy.cidr import CidrSet
from pyngress.policy.global_window import WindowBatches
from pyngress.policy.limits import ConnectionLimiter, ConnectionSlots, RateLimiter
from pyngress.policy.shared_buckets import Buffer, SharedRateLimiter
from pyngress.policy.shared_connections import SharedConnectionLimiter

SharedCounts = tuple[Buffer, int, int]  # the connection counts' region, the worker count, this worker's index


class RoutePolicy:
    __slots__ = ("access", "connections", "exempt", "global_batches", "global_ignored", "more_rates",
                 "needs_address", "rate", "rates", "screened", "spec")

    def __init__(self, spec: FlowSpec, *, workers: int = 1, table_size: int = 65536,
                 shared: Buffer | None = None, counts: SharedCounts | None = None) -> None:
        self.spec = spec
        has_access = spec.allow or spec.deny or spec.block_cidrs or spec.block_user_agents or spec.block_referers
        self.access = AccessList(spec.allow, spec.deny + spec.block_cidrs, spec.block_user_agents,
                                 spec.block_referers) if has_access else None
        self.exempt = CidrSet(spec.exempt)
        self.rates: tuple[RateLimiter | SharedRateLimiter, ...]
        if shared is not None:
            self.rates = tuple(SharedRateLimiter(shared, f"{spec.key}#{i}", r.rate, r.burst)
                               for i, r in enumerate(spec.rates))
        else:
            self.rates = tuple(RateLimiter(r.rate / workers, max(1, ceil(r.burst / workers)), table_size)
                               for r in spec.rates)
        self.connections: ConnectionSlots | None = None
        if spec.connections and counts is not None:
            region, group, worker = counts
            self.connections = SharedConnectionLimiter(region, spec.key, spec.connections, group, worker)
        elif spec.connections:
            self.connections = ConnectionLimiter(ceil(spec.connections / workers))
        ignored = spec.global_limit.ignored if spec.global_limit is not None else ()
        self.global_ignored = CidrSet(ignored)
        # the client address as an int is needed only to match networks: skip the lookup otherwise
        self.needs_address = bool(self.exempt or self.global_ignored)  # access lists remember verdicts
        # the short way (runtime.flow.admit) for routes with only rate and connection limits: the first rate
        # limit, then any other (limit-rps and limit-rpm together)
        self.screened = bool(self.access is not None or self.needs_address)
        # the global limit's live state (runtime.flow: local batches, key template, Redis key prefix)
        self.global_batches: tuple[WindowBatches, HashKey | None, bytes] | None = None
        self.rate = self.rates[0] if self.rates else None
        self.more_rates = self.rates[1:]

    def take_rate(self, client: str, now: float) -> float:
        """0.0 when every rate limit admits the request, else the seconds to wait (the longest)."""
        for limiter in self.rates:
            wait = limiter.take(client, now)
            if wait:
                return wait
        return 0.0
