"""Smooth weighted round robin: exact shares per cycle, even interleaving, random start, state kept by update."""

from __future__ import annotations

import random
from collections import Counter
from itertools import groupby

from hypothesis import given, settings
from hypothesis import strategies as st

from pyngress.balancing import NO_CONTEXT, PickContext
from pyngress.balancing.weighted import SmoothWeightedRoundRobin
from pyngress.model import Endpoint

A = Endpoint("10.0.0.1", 80, weight=3)
B = Endpoint("10.0.0.2", 80, weight=1)


def endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 8080, weight=w) for i, w in enumerate(weights)]


def picks(balancer: SmoothWeightedRoundRobin, n: int, ctx: PickContext = NO_CONTEXT) -> list[Endpoint | None]:
    return [balancer.pick(ctx) for _ in range(n)]


def test_three_to_one_over_400_picks_is_exactly_300_to_100_for_any_start() -> None:
    for seed in range(20):
        counts = Counter(picks(SmoothWeightedRoundRobin([A, B], random.Random(seed)), 400))
        assert counts == {A: 300, B: 100}


def test_three_to_one_is_interleaved_b_once_in_every_four_consecutive_picks() -> None:
    # The most even spread integers allow. No run of three A's at all is impossible: a cycle of four holds
    # three A's and one B, so three A's always sit together across the cycle's boundary; what smoothness
    # rules out is A A A A and B B.
    for seed in range(20):
        seq = picks(SmoothWeightedRoundRobin([A, B], random.Random(seed)), 400)
        assert all(seq[i : i + 4].count(B) == 1 for i in range(len(seq) - 3))
        assert max(len(list(run)) for ep, run in groupby(seq) if ep == A) == 3


def test_five_to_one_to_one_is_smooth_not_five_in_a_row() -> None:
    heavy, b, c = endpoints(5, 1, 1)
    seq = picks(SmoothWeightedRoundRobin([heavy, b, c], random.Random(3)), 700)
    assert Counter(seq) == {heavy: 500, b: 100, c: 100}
    assert max(len(list(run)) for ep, run in groupby(seq) if ep == heavy) <= 4  # naive WRR: 5 in a row


def test_equal_weights_are_plain_round_robin() -> None:
    eps = endpoints(1, 1, 1, 1, 1)
    seq = picks(SmoothWeightedRoundRobin(eps, random.Random(7)), 50)
    assert Counter(seq) == dict.fromkeys(eps, 10)
    assert all(len(set(seq[i : i + 5])) == 5 for i in range(46))  # every 5 consecutive picks: all five


def test_start_is_random_per_balancer() -> None:
    eps = endpoints(1, 1, 1, 1, 1)
    firsts = {SmoothWeightedRoundRobin(eps, random.Random(seed)).pick(NO_CONTEXT) for seed in range(40)}
    assert len(firsts) == 5
    phases = {tuple(picks(SmoothWeightedRoundRobin([A, B], random.Random(seed)), 4)) for seed in range(40)}
    assert len(phases) == 4  # all four phases of A A B A


def test_same_seed_same_sequence() -> None:
    eps = endpoints(4, 2, 1, 7)
    first = picks(SmoothWeightedRoundRobin(eps, random.Random(11)), 100)
    again = picks(SmoothWeightedRoundRobin(list(reversed(eps)), random.Random(11)), 100)
    assert first == again  # the order endpoints arrive in does not matter either


def test_weight_zero_is_never_picked() -> None:
    eps = [*endpoints(2, 1), Endpoint("10.0.0.9", 8080, weight=0)]
    counts = Counter(picks(SmoothWeightedRoundRobin(eps, random.Random(0)), 300))
    assert counts == {eps[0]: 200, eps[1]: 100}


def test_only_weight_zero_endpoints_pick_none() -> None:
    assert SmoothWeightedRoundRobin(endpoints(0, 0), random.Random(0)).pick(NO_CONTEXT) is None


def test_no_endpoints_pick_none_and_one_endpoint_always_picked() -> None:
    assert SmoothWeightedRoundRobin([], random.Random(0)).pick(NO_CONTEXT) is None
    assert set(picks(SmoothWeightedRoundRobin([A], random.Random(0)), 5)) == {A}


def test_retry_skips_excluded_and_keeps_the_others_proportions() -> None:
    a, b, c = endpoints(3, 2, 1)
    balancer = SmoothWeightedRoundRobin([a, b, c], random.Random(5))
    seq = picks(balancer, 300, PickContext(exclude={a.key}))
    assert Counter(seq) == {b: 200, c: 100}


def test_retry_with_equal_weights_takes_the_next_not_excluded() -> None:
    a, b, c = endpoints(1, 1, 1)
    balancer = SmoothWeightedRoundRobin([a, b, c], random.Random(5))
    seq = picks(balancer, 30, PickContext(exclude={b.key}))
    assert Counter(seq) == {a: 15, c: 15}
    assert all(seq[i] != seq[i + 1] for i in range(29))


def test_weights_changing_to_equal_and_back_keep_the_due_endpoint() -> None:
    a, b = endpoints(1, 1)
    balancer = SmoothWeightedRoundRobin([a, b], random.Random(0))
    due = {a, b} - {balancer.pick(NO_CONTEXT)}
    heavier_b = Endpoint(b.address, b.port, weight=2)
    balancer.update([a, heavier_b])
    assert {balancer.pick(NO_CONTEXT)} == {a if a in due else heavier_b}
    assert Counter(e.key if e else None for e in picks(balancer, 300)) == {a.key: 100, b.key: 200}
    balancer.update([a, b])
    assert Counter(picks(balancer, 100)) == {a: 50, b: 50}


def test_retry_with_every_endpoint_excluded_gives_none() -> None:
    balancer = SmoothWeightedRoundRobin([A, B], random.Random(0))
    assert balancer.pick(PickContext(exclude=(A.key, B.key))) is None
    eps = endpoints(1, 1)
    assert SmoothWeightedRoundRobin(eps, random.Random(0)).pick(PickContext(exclude=[e.key for e in eps])) is None


def test_reload_with_the_same_endpoints_continues_the_sequence_exactly() -> None:
    # "Keeps state": after update with the same (key, weight) set, in any order and as new objects, the picks
    # are those the balancer would have made without the reload; so 400 picks spanning it are still 300/100.
    plain = SmoothWeightedRoundRobin([A, B], random.Random(9))
    reloaded = SmoothWeightedRoundRobin([A, B], random.Random(9))
    before = picks(reloaded, 201)
    reloaded.update([Endpoint("10.0.0.2", 80, 1, name="pod-b"), Endpoint("10.0.0.1", 80, 3, name="pod-a")])
    after = picks(reloaded, 199)
    keys = [e.key if e else None for e in before + after]
    assert keys == [e.key if e else None for e in picks(plain, 400)]
    assert Counter(keys) == {A.key: 300, B.key: 100}


def test_reload_keeps_the_standing_of_remaining_endpoints() -> None:
    a, b, c = endpoints(1, 1, 1)
    balancer = SmoothWeightedRoundRobin([a, b, c], random.Random(2))
    seq = picks(balancer, 2)
    due = ({a, b, c} - set(seq)).pop()  # the one not yet picked in this cycle
    balancer.update([a, b, c, Endpoint("10.0.0.4", 8080)])
    assert balancer.pick(NO_CONTEXT) == due


def test_reload_to_empty_and_back() -> None:
    balancer = SmoothWeightedRoundRobin([A, B], random.Random(0))
    balancer.update([])
    assert balancer.pick(NO_CONTEXT) is None
    balancer.update([A, B])
    assert Counter(picks(balancer, 400)) == {A: 300, B: 100}


# equal weights half the time: the balancer then keeps a cursor, and updates convert between the two forms
weights_lists = st.one_of(
    st.lists(st.integers(1, 10), min_size=1, max_size=8),
    st.builds(lambda w, n: [w] * n, st.integers(1, 4), st.integers(1, 8)),
)


@given(weights=weights_lists, seed=st.integers(0, 2**32), offset=st.integers(0, 50))
def test_any_full_cycle_gives_each_endpoint_exactly_its_weight(weights: list[int], seed: int, offset: int) -> None:
    eps = endpoints(*weights)
    balancer = SmoothWeightedRoundRobin(eps, random.Random(seed))
    picks(balancer, offset)
    assert Counter(picks(balancer, sum(weights))) == dict(zip(eps, weights, strict=True))


@given(weights=weights_lists, seed=st.integers(0, 2**32))
def test_counts_never_stray_from_their_share(weights: list[int], seed: int) -> None:
    # From the all-zero state every prefix is within 1 of its share; from a random phase (a window of the
    # periodic sequence) within 2.
    eps = endpoints(*weights)
    total = sum(weights)
    balancer = SmoothWeightedRoundRobin(eps, random.Random(seed))
    counts: Counter[Endpoint | None] = Counter()
    for k in range(1, 2 * total + 1):
        counts[balancer.pick(NO_CONTEXT)] += 1
        assert all(abs(counts[e] - k * e.weight / total) < 2 for e in eps)


@settings(max_examples=200)
@given(
    weights=weights_lists,
    new_weights=weights_lists,
    kept=st.integers(0, 8),
    before=st.integers(0, 60),
    seed=st.integers(0, 2**32),
)
def test_after_a_change_one_cycle_is_within_one_and_the_next_ones_exact(
    weights: list[int], new_weights: list[int], kept: int, before: int, seed: int
) -> None:
    old = endpoints(*weights)
    # the first `kept` endpoints stay (reweighted); the rest are new addresses
    new = [Endpoint(f"10.0.{0 if i < kept else 1}.{i + 1}", 8080, weight=w) for i, w in enumerate(new_weights)]
    balancer = SmoothWeightedRoundRobin(old, random.Random(seed))
    picks(balancer, before)
    balancer.update(new)
    total = sum(new_weights)
    first = Counter(picks(balancer, total))
    assert all(abs(first[e] - e.weight) <= 1 for e in new)
    seq = picks(balancer, 3 * total)
    for start in range(0, 2 * total):
        assert Counter(seq[start : start + total]) == {e: e.weight for e in new}
