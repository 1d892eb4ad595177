"""Round robin: even spread, random start, cursor kept across updates, retries skip tried endpoints."""

from __future__ import annotations

import random
from collections import Counter

from pyngress.balancing import NO_CONTEXT, PickContext, RoundRobin
from pyngress.model import Endpoint


def endpoints(n: int, first_port: int = 9000) -> list[Endpoint]:
    return [Endpoint("127.0.0.1", first_port + i) for i in range(n)]


def test_fifty_picks_over_five_endpoints_give_ten_each() -> None:
    rr = RoundRobin(endpoints(5), random.Random(7))
    counts = Counter(rr.pick(NO_CONTEXT) for _ in range(50))
    assert sorted(counts.values()) == [10] * 5


def test_start_position_is_random_per_balancer() -> None:
    firsts = {RoundRobin(endpoints(5), random.Random(seed)).pick(NO_CONTEXT) for seed in range(40)}
    assert len(firsts) > 1


def test_no_endpoints_picks_none() -> None:
    assert RoundRobin([], random.Random(0)).pick(NO_CONTEXT) is None


def test_update_continues_with_the_endpoint_that_was_due() -> None:
    eps = endpoints(4)
    rr = RoundRobin(eps, random.Random(3))
    seen = [rr.pick(NO_CONTEXT) for _ in range(2)]
    due = eps[(eps.index(seen[-1]) + 1) % 4]
    rr.update([*eps, Endpoint("127.0.0.1", 9100)])
    assert rr.pick(NO_CONTEXT) == due


def test_update_with_the_same_endpoints_keeps_the_rotation() -> None:
    eps = endpoints(3)
    rr = RoundRobin(eps, random.Random(1))
    before = [rr.pick(NO_CONTEXT) for _ in range(2)]
    rr.update(list(eps))
    after = rr.pick(NO_CONTEXT)
    assert after is not None and after not in before


def test_update_to_empty_then_back() -> None:
    rr = RoundRobin(endpoints(2), random.Random(0))
    rr.update([])
    assert rr.pick(NO_CONTEXT) is None
    rr.update(endpoints(2))
    assert rr.pick(NO_CONTEXT) is not None


def test_retry_skips_endpoints_already_tried() -> None:
    eps = endpoints(3)
    rr = RoundRobin(eps, random.Random(0))
    tried = (eps[0].key, eps[1].key)
    for _ in range(6):
        assert rr.pick(PickContext(exclude=tried)) == eps[2]


def test_retry_with_every_endpoint_tried_gives_none() -> None:
    eps = endpoints(2)
    rr = RoundRobin(eps, random.Random(0))
    assert rr.pick(PickContext(exclude=[e.key for e in eps])) is None
