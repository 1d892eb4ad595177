"""Weighted random: uniform or weighted shares within stated tolerances, exclude, determinism, the sampler."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from pyngress.balancing import NO_CONTEXT, PickContext
from pyngress.balancing.random_pick import RandomPick, WeightedDraw
from pyngress.model import Endpoint


def endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 8080, weight=w) for i, w in enumerate(weights)]


def counts(balancer: RandomPick, n: int, ctx: PickContext = NO_CONTEXT) -> Counter[Endpoint | None]:
    return Counter(balancer.pick(ctx) for _ in range(n))


def test_equal_weights_spread_uniformly_within_five_percent() -> None:
    # 10,000 picks over 4: expect 2,500 each, standard deviation 43; +-125 (5 %) is about 2.9 sigma.
    eps = endpoints(1, 1, 1, 1)
    for seed in range(5):
        got = counts(RandomPick(eps, random.Random(seed)), 10_000)
        assert set(got) == set(eps)
        assert all(abs(got[e] - 2_500) <= 125 for e in eps), got


def test_three_to_one_within_two_percent_of_the_picks() -> None:
    # expect 7,500 / 2,500 of 10,000, standard deviation 43; +-200 is 4.6 sigma
    a, b = endpoints(3, 1)
    for seed in range(5):
        got = counts(RandomPick([a, b], random.Random(seed)), 10_000)
        assert abs(got[a] - 7_500) <= 200, got


def test_weight_zero_is_never_picked() -> None:
    eps = endpoints(1, 0, 2)
    got = counts(RandomPick(eps, random.Random(1)), 3_000)
    assert eps[1] not in got
    assert set(got) == {eps[0], eps[2]}


def test_no_endpoints_pick_none_and_one_endpoint_always_picked() -> None:
    assert RandomPick([], random.Random(0)).pick(NO_CONTEXT) is None
    assert RandomPick(endpoints(0), random.Random(0)).pick(NO_CONTEXT) is None
    (only,) = endpoints(5)
    assert set(counts(RandomPick([only], random.Random(0)), 20)) == {only}


def test_retry_draws_among_the_endpoints_not_yet_tried() -> None:
    eps = endpoints(1, 1, 1)
    got = counts(RandomPick(eps, random.Random(2)), 3_000, PickContext(exclude={eps[0].key}))
    assert set(got) == {eps[1], eps[2]}
    assert abs(got[eps[1]] - 1_500) <= 150


def test_retry_with_every_endpoint_excluded_gives_none() -> None:
    eps = endpoints(1, 2)
    assert RandomPick(eps, random.Random(0)).pick(PickContext(exclude=[e.key for e in eps])) is None


def test_same_seed_same_picks_whatever_the_endpoint_order() -> None:
    eps = endpoints(1, 2, 3, 4)
    one = RandomPick(eps, random.Random(4))
    other = RandomPick(list(reversed(eps)), random.Random(4))
    seq = [one.pick(NO_CONTEXT) for _ in range(200)]
    assert seq == [other.pick(NO_CONTEXT) for _ in range(200)]
    assert len(set(seq)) == 4


def test_update_replaces_the_endpoints() -> None:
    eps = endpoints(1, 1)
    balancer = RandomPick(eps, random.Random(0))
    balancer.update(eps[:1])
    assert set(counts(balancer, 50)) == {eps[0]}
    balancer.update([])
    assert balancer.pick(NO_CONTEXT) is None


def test_two_draws_distinct_indices_in_proportion_without_rejection() -> None:
    draw = WeightedDraw([1000, 1, 1])
    rng = random.Random(0)
    pairs = [draw.two(rng) for _ in range(10_000)]
    assert all(i != j for i, j in pairs)
    # the first is index 0 almost always; the second is then 1 or 2, evenly
    seconds = Counter(j for i, j in pairs if i == 0)
    assert abs(seconds[1] - seconds[2]) <= 300


@given(weights=st.lists(st.integers(1, 100), min_size=2, max_size=20), seed=st.integers(0, 2**32))
def test_two_always_gives_two_distinct_valid_indices(weights: list[int], seed: int) -> None:
    draw = WeightedDraw(weights)
    rng = random.Random(seed)
    for _ in range(50):
        i, j = draw.two(rng)
        assert i != j
        assert 0 <= i < len(weights) and 0 <= j < len(weights)


def test_one_follows_the_weights() -> None:
    draw = WeightedDraw([1, 2, 7])
    rng = random.Random(3)
    got = Counter(draw.one(rng) for _ in range(10_000))
    assert abs(got[0] - 1_000) <= 150 and abs(got[1] - 2_000) <= 200 and abs(got[2] - 7_000) <= 250
