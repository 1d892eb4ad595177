"""Consistent hashing (`upstream-hash-by`): the same key goes to the same endpoint, and a change of the endpoint
set moves only about the share of the endpoint that came or went.

Two tables, chosen by `hash-algorithm`, both a circular array of owners plus `slot(hash)`:

* `ring` (ketama): each endpoint of weight w puts 160 * w points on a 64-bit circle, at the hashes of
  `"<key>-<i>"`; a request goes to the owner of the first point at or after its hash. Adding an endpoint takes
  only the arcs in front of its own points, so exactly the keys it now owns move (about 1/(N+1) of them).
* `maglev`: a 65537-slot lookup table (see `maglev.py`); a request goes to `table[hash % 65537]`. Shares are
  exact to one slot; a change moves the changed endpoint's share plus a few others (measured: under 0.3 %
  of all keys for 5 to 11 endpoints).

Retries (`ctx.exclude`) walk on from the request's slot to the next slot whose owner was not tried: on the ring
that is the next endpoint clockwise, in maglev an effectively random other one. The walk is deterministic, so
the retries of one key also go to one place. Without a hash key the client address is hashed.

`HashSubset` is ingress-nginx's `upstream-hash-by-subset`: endpoints are cut into subsets, the key picks a
subset through a table, and a random member of that subset (injected rng) serves the request.

Every table is built from the endpoints sorted by key, so all replicas and workers agree whatever order the
endpoints arrive in; `update` rebuilds only when the set of (key, weight) pairs changed. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_left
from collections.abc import Collection, Sequence
from typing import Protocol

from pyngress.balancing.base import PickContext
from pyngress.balancing.maglev import TABLE_SIZE, maglev_table
from pyngress.model import Endpoint

# ketama's figure. An endpoint's share of the circle then deviates from its weight's by 7.5 % (one standard
# deviation, measured over 100 random sets of 3 to 20 endpoints): a set of 10 has its worst endpoint off by
# 13 % at the median. Maglev, not more points, is the answer for an even spread.
POINTS_PER_WEIGHT = 160
Members = Sequence[tuple[str, int]]

_blake2b = hashlib.blake2b


def hash64(data: bytes) -> int:
    """A stable, seedless 64-bit hash: the same on every process and machine (unlike the salted `hash()`).

    BLAKE2b cut to 8 bytes: 0.41 us for a 20-byte key here (CPython 3.11), against 0.15 us for two zlib.crc32
    with different seeds; but CRC is linear, so the second CRC adds no independent bits and similar keys
    ("10.0.0.1:80-1", "10.0.0.1:80-2") land in correlated places. Half a microsecond per request buys a
    hash with no such structure.
    """
    return int.from_bytes(_blake2b(data, digest_size=8).digest(), "big")


class Table(Protocol):
    owners: list[int]  # circular: owners[slot] is an index into the members the table was built from

    def slot(self, h: int) -> int: ...


class RingTable:
    __slots__ = ("owners", "points")

    def __init__(self, members: Members, points_per_weight: int = POINTS_PER_WEIGHT) -> None:
        ring = sorted(
            (hash64(f"{key}-{i}".encode()), key, index)  # the key breaks (improbable) ties the same everywhere
            for index, (key, weight) in enumerate(members)
            for i in range(points_per_weight * weight)
        )
        self.points = [h for h, _, _ in ring]
        self.owners = [index for _, _, index in ring]

    def slot(self, h: int) -> int:
        i = bisect_left(self.points, h)
        return i if i < len(self.points) else 0


class MaglevTable:
    __slots__ = ("owners",)

    def __init__(self, members: Members) -> None:
        self.owners = maglev_table(members, TABLE_SIZE)

    def slot(self, h: int) -> int:
        return h % TABLE_SIZE


TABLES: dict[str, type[RingTable] | type[MaglevTable]] = {"ring": RingTable, "maglev": MaglevTable}


def serving(endpoints: Sequence[Endpoint]) -> tuple[Endpoint, ...]:
    """The endpoints a table is built from: weight > 0, one per key (the first), sorted by key."""
    unique: dict[str, Endpoint] = {}
    for e in endpoints:
        if e.weight > 0:
            unique.setdefault(e.key, e)
    return tuple(unique[key] for key in sorted(unique))


def members(endpoints: Sequence[Endpoint]) -> list[tuple[str, int]]:
    """(key, weight) pairs with the weights divided by their gcd: 2:2 builds the same table as 1:1."""
    divisor = math.gcd(*(e.weight for e in endpoints)) or 1
    return [(e.key, e.weight // divisor) for e in endpoints]


HASH_MEMO_LIMIT = 4096  # keys whose hash is remembered per balancer; past it the memo starts over


class _ConsistentHash:
    __slots__ = ("_endpoints", "_memo", "_signature", "_table")
    _table_type: type[RingTable] | type[MaglevTable]

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random | None = None) -> None:
        # rng is accepted for a uniform factory signature; hashing draws nothing
        self._signature: tuple[tuple[str, int], ...] | None = None
        # key -> hash64(key): a client's key repeats on every request of its connection (and $remote_addr
        # across its connections), and BLAKE2b is most of a pick's cost. Bounded by HASH_MEMO_LIMIT.
        self._memo: dict[bytes, int] = {}
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = eps = serving(endpoints)  # fresh objects even when the table stays
        signature = tuple((e.key, e.weight) for e in eps)
        if signature != self._signature:
            self._table: Table = self._table_type(members(eps))
            self._signature = signature

    def pick(self, ctx: PickContext) -> Endpoint | None:
        table = self._table
        if not table.owners:
            return None
        key = ctx.hash_key
        if key is None:
            key = ctx.client_address.encode()
        hashed = self._memo.get(key)
        if hashed is None:
            if len(self._memo) >= HASH_MEMO_LIMIT:
                self._memo.clear()
            hashed = self._memo[key] = hash64(key)
        slot = table.slot(hashed)
        chosen = self._endpoints[table.owners[slot]]
        if ctx.exclude and chosen.key in ctx.exclude:
            return self._walk(slot, ctx.exclude)
        return chosen

    def _walk(self, slot: int, exclude: Collection[str]) -> Endpoint | None:
        # retries only. Bounded: gives up at once when every endpoint was tried, else stops within one lap
        if all(e.key in exclude for e in self._endpoints):
            return None
        owners = self._table.owners
        n = len(owners)
        for step in range(1, n):
            candidate = self._endpoints[owners[(slot + step) % n]]
            if candidate.key not in exclude:
                return candidate
        return None


class RingHash(_ConsistentHash):
    """Ketama ring, 160 points per unit of weight. `RingHash(endpoints, rng=None)`."""

    __slots__ = ()
    _table_type = RingTable


class Maglev(_ConsistentHash):
    """Maglev table of 65537 slots, weights as turns per round. `Maglev(endpoints, rng=None)`."""

    __slots__ = ()
    _table_type = MaglevTable


class HashSubset:
    """`upstream-hash-by-subset`, as ingress-nginx documents and does it.

    The endpoints (sorted by key) are cut into consecutive subsets of `subset_size` places; the last subset is
    filled up with endpoints from the start (with fewer endpoints than places, they repeat). An endpoint holding
    two places is picked that much more often, as in ingress-nginx. A table (ring or maglev) over the subset
    names "set1", "set2"... maps the key to a subset, and a random member of it serves. Weights are ignored,
    as in ingress-nginx. As there, a change of the endpoint set can regroup the members of many subsets
    (membership follows the sorted order); the key-to-subset mapping moves only when the subset count changes.
    """

    __slots__ = ("_algorithm", "_count", "_rng", "_size", "_subsets", "_table")

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random, subset_size: int = 3,
                 algorithm: str = "ring") -> None:
        if subset_size < 1:
            raise ValueError(f"upstream-hash-by-subset-size must be at least 1, not {subset_size}")
        if algorithm not in TABLES:
            raise ValueError(f"hash algorithm {algorithm!r} is not one of {sorted(TABLES)}")
        self._rng = rng
        self._size = subset_size
        self._algorithm = algorithm
        self._count = -1
        self.update(endpoints)

    @property
    def subsets(self) -> tuple[tuple[Endpoint, ...], ...]:
        return self._subsets

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        eps = serving(endpoints)
        size = self._size
        count = -(-len(eps) // size)  # ceil
        padded = [eps[i % len(eps)] for i in range(count * size)]  # the last subset wraps to the first members
        self._subsets = tuple(tuple(padded[i : i + size]) for i in range(0, len(padded), size))
        if count != self._count:  # the table maps keys to subset names, so only their number matters
            self._table: Table = TABLES[self._algorithm]([(f"set{i + 1}", 1) for i in range(count)])
            self._count = count

    def pick(self, ctx: PickContext) -> Endpoint | None:
        table = self._table
        if not table.owners:
            return None
        key = ctx.hash_key
        slot = table.slot(hash64(key if key is not None else ctx.client_address.encode()))
        subset = self._subsets[table.owners[slot]]
        if not ctx.exclude:
            return subset[self._rng.randrange(len(subset))]
        return self._pick_excluding(slot, ctx.exclude)

    def _pick_excluding(self, slot: int, exclude: Collection[str]) -> Endpoint | None:
        # the request's subset first, then the next subsets along the table, as far as one lap
        owners = self._table.owners
        n = len(owners)
        seen: set[int] = set()
        for step in range(n):
            index = owners[(slot + step) % n]
            if index in seen:
                continue
            seen.add(index)
            left = [e for e in self._subsets[index] if e.key not in exclude]
            if left:
                return left[self._rng.randrange(len(left))]
            if len(seen) == len(self._subsets):
                break
        return None
