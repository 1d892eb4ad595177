"""Maglev lookup table population (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
Balancer", NSDI 2016, section 3.4), with weights.

Each member i has a permutation of the M table slots, `slot_j = (offset_i + j * skip_i) mod M`, from two hashes
of its key; M is prime and 1 <= skip < M, so every permutation visits every slot once. Members then take turns,
in a fixed order (sorted by key, so every replica builds the same table), each claiming the next slot of its
permutation that is still free, until the table is full. With equal weights every member ends with
floor(M/N) or ceil(M/N) slots; when a member joins or leaves, most slots keep their owner because the other
members' preference lists do not change (the paper measures, and our tests bound, the few that do).

Weights: a member of weight w takes w turns per round, so it ends with about w/sum(w) of the slots. The caller
divides weights by their gcd (3:3 behaves as 1:1) and leaves out members of weight 0.

Cost: filling M slots probes about M * H(M) ~ 12 * M slots in total (a coupon-collector tail), whatever N is;
the loop is plain ints and one list, no object per slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

TABLE_SIZE = 65537  # prime; the paper recommends M >> N (M > 100 N keeps each member within ~1 % of its share)


def permutation(key: str, size: int = TABLE_SIZE) -> tuple[int, int]:
    """(offset, skip) of a member's permutation: the two halves of a 128-bit BLAKE2b of its key."""
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") % size, int.from_bytes(digest[8:], "big") % (size - 1) + 1


def maglev_table(members: Sequence[tuple[str, int]], size: int = TABLE_SIZE) -> list[int]:
    """The owner (index into `members`) of each of `size` slots; `members` are (key, weight > 0) pairs."""
    if not members:
        return []
    slots = [permutation(key, size) for key, _ in members]
    position = [offset for offset, _ in slots]
    turns = list(enumerate(members))
    table = [-1] * size
    left = size
    while True:
        for i, (_, weight) in turns:
            c = position[i]
            skip = slots[i][1]
            for _ in range(weight):
                while table[c] >= 0:  # taken: on along this member's permutation
                    c += skip
                    if c >= size:
                        c -= size
                table[c] = i
                left -= 1
                if not left:
                    return table
            position[i] = c
