"""upstream-hash-by-subset: a key maps to one subset of the given size, and picks spread over its members."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pyngress.balancing.base import PickContext
from pyngress.balancing.hashing import HashSubset
from pyngress.model import Endpoint

_RNG = random.Random(2)
KEYS = [_RNG.randbytes(20) for _ in range(300)]
TABLES = pytest.mark.parametrize("algorithm", ["ring", "maglev"])


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.2.0.{i + 1}", 8080) for i in range(n)]


def keys_of(subset: tuple[Endpoint, ...]) -> list[str]:
    return [e.key for e in subset]


def test_endpoints_are_cut_in_sorted_order_and_the_last_subset_wraps() -> None:
    balancer = HashSubset(list(reversed(endpoints(7))), random.Random(0), subset_size=3)
    eps = endpoints(7)
    assert balancer.subsets == ((eps[0], eps[1], eps[2]), (eps[3], eps[4], eps[5]), (eps[6], eps[0], eps[1]))


def test_fewer_endpoints_than_the_size_repeat() -> None:
    (only,) = endpoints(1)
    assert HashSubset([only], random.Random(0), subset_size=3).subsets == ((only, only, only),)


@TABLES
def test_a_key_stays_in_one_subset_and_spreads_over_its_members(algorithm: str) -> None:
    balancer = HashSubset(endpoints(9), random.Random(3), subset_size=3, algorithm=algorithm)
    used: Counter[frozenset[Endpoint | None]] = Counter()
    for k in KEYS[:50]:
        seen = Counter(balancer.pick(PickContext(hash_key=k)) for _ in range(300))
        assert tuple(sorted(seen, key=lambda e: e.key if e else "")) in balancer.subsets
        assert min(seen.values()) >= 60  # 100 each expected
        used[frozenset(seen)] += 1
    assert len(used) == 3  # the keys reach every subset


@TABLES
def test_same_key_same_subset_across_instances(algorithm: str) -> None:
    a = HashSubset(endpoints(8), random.Random(1), 4, algorithm)
    b = HashSubset(list(reversed(endpoints(8))), random.Random(2), 4, algorithm)
    for k in KEYS:
        assert _subset_of(a, k) == _subset_of(b, k)


def _subset_of(balancer: HashSubset, key: bytes) -> frozenset[str]:
    return frozenset(e.key for e in (balancer.pick(PickContext(hash_key=key)) for _ in range(40)) if e)


def test_update_keeping_the_subset_count_keeps_the_table() -> None:
    balancer = HashSubset(endpoints(5), random.Random(1), 3)
    table = balancer._table
    balancer.update(endpoints(6))  # still two subsets: only their membership changes
    assert balancer._table is table
    assert _subset_of(balancer, b"k") in {frozenset(keys_of(s)) for s in balancer.subsets}
    balancer.update(endpoints(7))
    assert balancer._table is not table


def test_exclude_picks_another_member_of_the_subset_first() -> None:
    balancer = HashSubset(endpoints(9), random.Random(4), 3)
    for k in KEYS[:50]:
        first = balancer.pick(PickContext(hash_key=k))
        assert first is not None
        subset = next(s for s in balancer.subsets if first in s)
        retry = balancer.pick(PickContext(hash_key=k, exclude={first.key}))
        assert retry in subset and retry != first


def test_exclude_whole_subset_moves_to_another_subset() -> None:
    balancer = HashSubset(endpoints(9), random.Random(5), 3)
    first = balancer.pick(PickContext(hash_key=b"k"))
    subset = next(s for s in balancer.subsets if first in s)
    retry = balancer.pick(PickContext(hash_key=b"k", exclude=set(keys_of(subset))))
    assert retry is not None and retry not in subset


def test_exclude_everything_and_no_endpoints_give_none() -> None:
    eps = endpoints(4)
    assert HashSubset(eps, random.Random(0)).pick(PickContext(hash_key=b"k", exclude={e.key for e in eps})) is None
    assert HashSubset([], random.Random(0)).pick(PickContext(hash_key=b"k")) is None


def test_without_hash_key_the_client_address_picks_the_subset() -> None:
    balancer = HashSubset(endpoints(9), random.Random(6), 3)
    by_address = _subset_of_context(balancer, PickContext(client_address="192.0.2.9"))
    assert by_address == _subset_of(balancer, b"192.0.2.9")


def _subset_of_context(balancer: HashSubset, ctx: PickContext) -> frozenset[str]:
    return frozenset(e.key for e in (balancer.pick(ctx) for _ in range(40)) if e)


@pytest.mark.parametrize(
    ("size", "algorithm", "message"), [(0, "ring", "at least 1"), (3, "rendezvous", "not one of")])
def test_bad_options_are_rejected(size: int, algorithm: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HashSubset(endpoints(3), random.Random(0), size, algorithm)
